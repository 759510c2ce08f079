"""Custom graph passes with the public Pattern API, run before conversion.

Two small patterns make a torch model convertible:

- ``LeakyReluToRelu``: a LeakyRelu with a small slope -> Relu. The converter
  would make the LeakyRelu a time-difference op and put a signed neuron after it
  (exact on average, but more ops and spikes of both signs); for a net trained
  with a slope of 0.01 the Relu is a close approximation that becomes one plain
  neuron.
- ``MaxPoolToAveragePool``: MaxPool -> AveragePool with the same kernel, strides,
  pads and ceil mode; an average of spike trains is exact, a max over-counts.
  It is the library's own pattern (``onnx_snn.graph.pooling``, what the
  converter's ``maxpool="avg"`` policy runs), composed here with one written
  for this example; the tests check that both routes agree.

Each pattern is wrapped in a ``PatternPass``; ``compose`` chains them into one
pass and ``run_passes`` applies it to the ONNX model. The rewritten ANN is then
converted, and the SNN's time-averaged output approaches the ANN's as T grows.

Run it with ``python examples/custom_pass.py`` (a few seconds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnx_snn import Pattern, PatternPass, compose, convert, run_passes
from onnx_snn.graph.pooling import MaxPoolToAveragePool
from onnx_snn.runtime import SpikingSession

TIMESTEPS = (8, 32, 128, 512)
INPUT_SHAPE = (3, 14, 14)


# --------------------------------------------------------------------------- patterns

class LeakyReluToRelu(Pattern):
    """Replace LeakyRelu(x, alpha) by Relu(x) when alpha <= ``max_alpha``."""

    def __init__(self, max_alpha: float = 0.05) -> None:
        self.max_alpha = max_alpha

    def match(self, node: gs.Node) -> bool:
        return node.op == "LeakyRelu" and node.attrs.get("alpha", 0.01) <= self.max_alpha

    def replace(self, node: gs.Node, graph: gs.Graph) -> Sequence[gs.Node]:
        return [gs.Node("Relu", f"{node.name}__relu", inputs=[node.inputs[0]],
                        outputs=list(node.outputs))]


#: The whole preparation as one pass: any ``graph -> graph`` callable composes.
snn_friendly = compose(PatternPass(MaxPoolToAveragePool()), PatternPass(LeakyReluToRelu()))


# --------------------------------------------------------------------------- model + data

def torch_model(average: bool = False, seed: int = 0) -> Any:
    """Conv-LeakyReLU-MaxPool-Conv-ReLU-MaxPool(ceil)-Linear with random weights.

    ``average=True`` builds the same network (same weights) with AvgPool2d in
    place of each MaxPool2d and ReLU in place of LeakyReLU: what the rewritten
    ONNX model should compute.
    """
    import torch
    from torch import nn

    def pool(ceil_mode: bool) -> nn.Module:
        return (nn.AvgPool2d(2, ceil_mode=ceil_mode, count_include_pad=False) if average
                else nn.MaxPool2d(2, ceil_mode=ceil_mode))

    torch.manual_seed(seed)
    first = nn.ReLU() if average else nn.LeakyReLU(0.01)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), first, pool(False),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), pool(True),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()


def make_data(count: int, seed: int) -> np.ndarray:
    """Uniform [0, 1) images, float32 [count, 3, 14, 14]."""
    return np.random.default_rng(seed).random((count, *INPUT_SHAPE), dtype=np.float32)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the main graph has."""
    return dict(Counter(node.op_type for node in model.graph.node))


def run_ann(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The ONNX ANN's first output in onnxruntime."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def export(module: Any) -> onnx.ModelProto:
    """The module as ONNX (TorchScript exporter: fast, plain Constant nodes)."""
    import torch

    from onnx_snn.export.torch import export_torch

    return export_torch(module, torch.from_numpy(make_data(2, seed=99)), dynamo=False)


# --------------------------------------------------------------------------- demo

def main(timesteps: tuple[int, ...] = TIMESTEPS, echo=print) -> dict[str, Any]:
    """Rewrite, convert and compare ANN and SNN outputs; return the numbers."""
    import torch

    original = export(torch_model())
    rewritten = run_passes(original, snn_friendly)
    x_calib, x_test = make_data(256, seed=1), make_data(32, seed=2)

    ann_out = run_ann(rewritten, x_test)
    with torch.no_grad():
        twin_out = torch_model(average=True)(torch.from_numpy(x_test)).numpy()
    snn = convert(rewritten, x_calib, progress=False)
    per_step = SpikingSession(snn.model).run(x_test, max(timesteps)).per_step
    errors = {t: float(np.abs(per_step[:t].mean(axis=0) - ann_out).mean()) for t in timesteps}

    results = {
        "ops_before": op_counts(original), "ops_after": op_counts(rewritten),
        "twin_max_abs_diff": float(np.abs(ann_out - twin_out).max()),
        "original_vs_rewritten_ann": float(np.abs(run_ann(original, x_test) - ann_out).mean()),
        "ann_mean_abs_output": float(np.abs(ann_out).mean()),
        "snn_mean_abs_error": errors,
        "neurons": [layer.neuron.op_type for layer in snn.layers],
    }
    echo(f"ops before: {results['ops_before']}")
    echo(f"ops after:  {results['ops_after']}")
    echo(f"rewritten ANN vs torch AvgPool twin: max |diff| = {results['twin_max_abs_diff']:.2e}")
    echo(f"ANN output, mean |y| = {results['ann_mean_abs_output']:.4f}; "
         f"sample 0: {np.array2string(ann_out[0, :4], precision=3)}")
    for t, error in errors.items():
        echo(f"SNN T={t:>3}: mean |SNN - ANN| = {error:.5f}; sample 0: "
             f"{np.array2string(per_step[:t].mean(axis=0)[0, :4], precision=3)}")
    return results


if __name__ == "__main__":
    main()
