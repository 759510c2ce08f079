"""Peak memory and shape-inference passes of converting a large (about 1.5 GB) model.

The model is an MLP of three wide Gemm layers with Relus (2048 -> 61440 -> 2048 ->
61440, 1.51 GB of float32 weights), saved with external data. A fresh
Python process converts it (Max calibration on 8 samples) and reports its own
peak RSS (Linux VmHWM), the seconds it took, and how many times ONNX shape
inference ran on the whole model.

    python benchmarks/conversion_memory.py [--inputs 2048] [--width 61440] [--layers 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# VmHWM, not ru_maxrss: ru_maxrss also counts the parent's memory at fork time.
CHILD = """
import json, re, sys, time
from pathlib import Path
import onnx.shape_inference

calls = []
infer = onnx.shape_inference.infer_shapes

def counted(model, *args, **kwargs):
    calls.append(model.ByteSize())
    return infer(model, *args, **kwargs)

onnx.shape_inference.infer_shapes = counted
from onnx_snn import convert
start = time.perf_counter()
result = convert(sys.argv[1], sys.argv[2], batch_size=8, progress=False)
seconds = time.perf_counter() - start
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
large = sum(size > 10**9 for size in calls)
print(json.dumps({"peak_rss_mb": peak_kib / 1024, "seconds": seconds,
                  "shape_inference_on_the_model": large, "neurons": len(result.layers)}))
"""


def wide_mlp(path: Path, inputs: int, width: int, layers: int) -> int:
    """Gemm-Relu layers alternating ``inputs`` -> ``width`` -> ``inputs``; returns bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, current, size = [], [], "x", inputs
    for index in range(layers):
        out = width if index % 2 == 0 else inputs
        weight = (rng.standard_normal((size, out)) / np.sqrt(size)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{index}"),
                  numpy_helper.from_array(np.full(out, 0.05, np.float32), f"b{index}")]
        nodes += [helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [f"h{index}"],
                                   name=f"fc{index}"),
                  helper.make_node("Relu", [f"h{index}"], [f"r{index}"], name=f"relu{index}")]
        current, size = f"r{index}", out
    inits.append(numpy_helper.from_array(np.eye(size, 10, dtype=np.float32), "head"))
    nodes.append(helper.make_node("MatMul", [current, "head"], ["y"], name="head"))
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", inputs])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data")
    return sum(t.ByteSize() for t in inits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2048)
    parser.add_argument("--width", type=int, default=61440)
    parser.add_argument("--layers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        size = wide_mlp(folder / "wide.onnx", args.inputs, args.width, args.layers)
        rng = np.random.default_rng(1)
        np.savez(folder / "calib.npz", x=rng.standard_normal((8, args.inputs), np.float32))
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder / "wide.onnx"),
                               str(folder / "calib.npz")], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"model: {size / 1e9:.3f} GB of weights, {result['neurons']} neuron layers")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MiB, {result['seconds']:.1f} s, shape inference "
          f"on the whole model {result['shape_inference_on_the_model']} times")


if __name__ == "__main__":
    main()
