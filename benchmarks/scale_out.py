"""What sharding over Ray costs and gives (``onnx_snn.runtime.cluster``;
docs/semantics.md, "Distributed runs").

The net: the VGG-style CNN of ``tests/zoo_models.py`` (3x32x32 inputs, 8
convolutions with MaxPool, random weights, TorchScript export), converted with
default settings on its 32 calibration images. The data: ``--samples`` images
(the zoo's 32x32 digits, repeated), saved as an uncompressed .npz with the ANN's
labels. Three measurements:

1. **Throughput**: ``snn_accuracy`` at ``--timesteps`` with batches of
   ``--batch-size``, in one process whose onnxruntime uses both cores, against
   ``Cluster(workers=2)`` (two Ray workers of one onnxruntime thread each, 4 shards
   per worker); the Ray start is not timed, the workers' start is (they are made
   per run). Samples per second of each, and their ratio.
2. **Overhead per task**: the same evaluation on the cluster at T = 1 with one
   batch of 2 per shard, against 2 shards per worker: (wall time difference) /
   (difference in task count); and the workers' start (two workers opening their
   sessions and running nothing: one tiny shard each).
3. **Multi-node**: ``ray.cluster_utils.Cluster`` starts two Ray nodes on this
   machine (one CPU each); ``onnx-snn eval ... --ray-address ADDR`` and ``onnx-snn
   eval`` alone run as subprocesses on the same data; their ``--json`` outputs are
   compared byte for byte.

    python benchmarks/scale_out.py [--samples 2048] [--timesteps 64] [--batch-size 16]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/zoo_models.py (tests/ is not a package)

import ray
from ray.cluster_utils import Cluster as RayNodes
from zoo_models import ZooBuilder, ort_outputs, zoo_images

from onnx_snn import convert
from onnx_snn.measure.evaluation import snn_accuracy
from onnx_snn.runtime.cluster import Cluster


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def prepare(folder: Path, samples: int) -> tuple[Path, Path]:
    """The converted VGG and the test data (.npz), in ``folder``."""
    built = ZooBuilder(folder).build("vgg", "torchscript")
    snn = folder / "vgg_snn.onnx"
    snn.write_bytes(convert(str(built.ann), str(built.calib), progress=False)
                    .model.SerializeToString())
    images = zoo_images()
    x = images[np.arange(samples) % len(images)]
    data = folder / "data.npz"
    np.savez(data, x=x, y=ort_outputs(built.ann, x)[0].argmax(axis=1).astype(np.int64))
    return snn, data


def throughput(snn: Path, data: Path, args: argparse.Namespace) -> dict:
    steps = [args.timesteps]
    alone_s, alone = timed(lambda: snn_accuracy(str(snn), str(data), timesteps=steps,
                                                batch_size=args.batch_size))
    with Cluster(workers=2) as cluster:
        sharded_s, sharded = timed(lambda: snn_accuracy(
            str(snn), str(data), timesteps=steps, batch_size=args.batch_size, cluster=cluster))
    return {"one_process_samples_per_s": args.samples / alone_s,
            "two_workers_samples_per_s": args.samples / sharded_s,
            "ratio": alone_s / sharded_s, "same_accuracy": alone == sharded}


def overhead(snn: Path, data: Path) -> dict:
    def run(cluster: Cluster) -> float:
        return timed(lambda: snn_accuracy(str(snn), str(data), timesteps=[1], batch_size=2,
                                          cluster=cluster))[0]

    samples = len(np.load(data)["y"])
    with Cluster(workers=2, batches_per_shard=samples // 2 // 4) as few:
        few_s = run(few)  # 4 shards: 2 per worker
    with Cluster(workers=2, batches_per_shard=1) as many:
        many_s = run(many)
    tiny = Path(tempfile.mkdtemp()) / "two.npz"
    loaded = np.load(data)
    np.savez(tiny, x=loaded["x"][:2], y=loaded["y"][:2])
    with Cluster(workers=2, batches_per_shard=1) as start:
        start_s = timed(lambda: snn_accuracy(str(snn), str(tiny), timesteps=[1], batch_size=1,
                                             cluster=start))[0]
    tasks = samples // 2
    return {"per_task_ms": 1e3 * (many_s - few_s) / (tasks - 4), "tasks": tasks,
            "workers_start_s": start_s}


def multi_node(snn: Path, data: Path, folder: Path, args: argparse.Namespace) -> dict:
    nodes = RayNodes(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    try:
        outputs = []
        for extra in ([], ["--ray-address", nodes.address]):
            out = folder / f"eval{len(outputs)}.json"
            command = ["onnx-snn", "eval", str(snn), "--data", str(data), "--timesteps",
                       f"{args.timesteps // 4},{args.timesteps}", "--batch-size",
                       str(args.batch_size), "--json", str(out), *extra]
            subprocess.run(command, check=True, capture_output=True, text=True)
            outputs.append(out.read_bytes())
        return {"nodes": len(nodes.list_all_nodes()), "same_bytes": outputs[0] == outputs[1],
                "accuracy": json.loads(outputs[1])["snn_accuracy"]}
    finally:
        nodes.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--timesteps", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        snn, data = prepare(folder, args.samples)
        results = {"throughput": throughput(snn, data, args), "overhead": overhead(snn, data)}
        results["multi_node"] = multi_node(snn, data, folder, args)
    print(f"`python benchmarks/scale_out.py {' '.join(sys.argv[1:])}`: VGG-style SNN, "
          f"{args.samples} samples, T = {args.timesteps}, batches of {args.batch_size}, "
          f"Ray {ray.__version__}\n")
    t, o, m = results["throughput"], results["overhead"], results["multi_node"]
    print(f"- throughput: one process (2 onnxruntime threads) "
          f"{t['one_process_samples_per_s']:.1f} samples/s; 2 Ray workers (1 thread each) "
          f"{t['two_workers_samples_per_s']:.1f} samples/s: {100 * t['ratio']:.1f} %; same "
          f"accuracy: {t['same_accuracy']}")
    print(f"- overhead: {o['per_task_ms']:.1f} ms per task ({o['tasks']} tasks of one "
          f"batch of 2 at T = 1, against 4); two workers start and run one tiny shard each "
          f"in {o['workers_start_s']:.2f} s")
    print(f"- multi-node: {m['nodes']} Ray nodes joined with --ray-address; eval --json "
          f"identical to one process: {m['same_bytes']} ({m['accuracy']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
