"""How much the native time ops speed up nets with time-difference ops.

The nets are those of ``tests/beyond_relu_models.py`` (built and trained as in
``benchmarks/beyond_relu.py``, shared cache), exported with each exporter of
``--exporters`` and converted with default settings. For each, one batch of
``--samples`` test digits
runs at ``--timesteps`` steps (direct encoding) in onnxruntime with the native
library registered, in two forms of the same converted model:

    native     the model as converted: RunningSum, RunningMean, Difference and
               StepDifference run as the library's kernels;
    function   the same model with those four ops' function bodies inlined
               (``onnx.inliner.inline_selected_functions``): the CumSum, Div, Mul,
               Pad, Slice and Sub nodes the kernels replace. IFNode stays native.

Printed per net: the median wall time of a run of each form (after one warm-up,
at least 3 runs), the speed-up, the share of the native run's kernel time spent in
the four time ops (onnxruntime's profiler, one more run), and whether both forms
give the same output bits with graph optimisations up to ``ORT_ENABLE_EXTENDED``.
(At the default ``ORT_ENABLE_ALL``, timed here, onnxruntime's NCHWc layout
transformer may pick other Conv kernels in one form than in the other, around
custom ops, so the sums of a Conv, and then the spikes, may round differently.)
onnxruntime uses ``--threads`` intra-op threads.

    python benchmarks/time_ops_speed.py [--archs vit,efficientnet,...] [--samples 100]
        [--exporters dynamo,torchscript] [--timesteps 64] [--threads 2] [--cache DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.inliner import inline_selected_functions

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/beyond_relu_models.py (tests/ is not a package)

from beyond_relu_models import ARCHITECTURES, EXPORTERS, BeyondReluBuilder

from onnx_snn import convert
from onnx_snn.io.metadata import metadata, timesteps_input
from onnx_snn.ops.function_bodies import DOMAIN
from onnx_snn.ops.native import register_native
from onnx_snn.ops.time_ops import TIME_OPS


def with_function_bodies(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the time ops replaced by their inlined function bodies."""
    return inline_selected_functions(model, [(DOMAIN, op) for op in TIME_OPS])


def session(model: onnx.ModelProto, threads: int, profile: str | None = None,
            level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            ) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = level
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    if not register_native(options):
        raise SystemExit("time_ops_speed.py: the native library does not load "
                         "(`onnx-snn doctor` says why)")
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def median_ms(run, min_runs: int = 3, budget_s: float = 10.0) -> float:
    """Median wall time of ``run()`` in ms, after one warm-up."""
    run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < budget_s and len(times) < 20:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return float(np.median(times)) * 1e3


def time_op_share(model: onnx.ModelProto, feeds: dict, threads: int) -> float:
    """Share of the kernel time that the time ops take in one profiled run."""
    with tempfile.TemporaryDirectory() as folder:
        profiled = session(model, threads, profile=str(Path(folder) / "profile"))
        profiled.run(None, feeds)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    spent: Counter[bool] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event.get("args", {}).get("op_name") in TIME_OPS] += event["dur"]
    return spent[True] / max(1, sum(spent.values()))


def measure(arch: str, exporter: str, builder: BeyondReluBuilder,
            args: argparse.Namespace) -> dict:
    """The row of one net and exporter."""
    built = builder.build(arch, exporter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(str(built.ann), np.load(built.calib)["x"], progress=False).model
    x = np.load(built.test)["x"][:args.samples]
    feeds = {snn.graph.input[0].name: x[None],
             timesteps_input(metadata(snn)): np.array(args.timesteps, np.int64)}
    native = session(snn, args.threads)
    function = session(with_function_bodies(snn), args.threads)
    extended = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    same = all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(
        session(snn, args.threads, level=extended).run(None, feeds),
        session(with_function_bodies(snn), args.threads, level=extended).run(None, feeds)))
    native_ms = median_ms(lambda: native.run(None, feeds))
    function_ms = median_ms(lambda: function.run(None, feeds))
    return {"net": arch, "exporter": exporter,
            "time_ops": sum(n.domain == DOMAIN and n.op_type in TIME_OPS
                                         for n in snn.graph.node),
            "native_ms": native_ms, "function_ms": function_ms,
            "speedup": function_ms / native_ms,
            "time_op_share": time_op_share(snn, feeds, args.threads), "same_bits": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="vit,efficientnet,mobilenetv3,convnext,bert")
    parser.add_argument("--exporters", default="dynamo")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--timesteps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=str(Path.home() / ".cache/onnx-snn/beyond-relu"))
    parser.add_argument("--json")
    args = parser.parse_args()
    archs, exporters = args.archs.split(","), args.exporters.split(",")
    for given, known in ((archs, ARCHITECTURES), (exporters, EXPORTERS)):
        unknown = [name for name in given if name not in known]
        if unknown:
            parser.error(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    builder = BeyondReluBuilder(args.cache, reuse=True)
    print(f"`python benchmarks/time_ops_speed.py {' '.join(sys.argv[1:])}`: "
          f"{args.samples} digits, T = {args.timesteps}, {args.threads} threads, "
          f"onnxruntime {ort.__version__}\n")
    print("| net | exporter | time ops | native ms | function bodies ms | speed-up | "
          "time ops' share of native kernel time | same bits |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    rows = []
    for arch in archs:
        for exporter in exporters:
            row = measure(arch, exporter, builder, args)
            rows.append(row)
            print(f"| {arch} | {exporter} | {row['time_ops']} | {row['native_ms']:.1f} | "
                  f"{row['function_ms']:.1f} | {row['speedup']:.2f}× | "
                  f"{100 * row['time_op_share']:.1f} % | "
                  f"{'yes' if row['same_bits'] else 'NO'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
