"""Tiny ANNs, one per graph pattern the converter must handle, shared by
``tests/test_patterns.py`` and ``benchmarks/patterns_table.py``.

Each builder in ``PATTERNS`` returns a ``PatternCase`` whose first four fields are
``(name, ann, data, kwargs)``: the ONNX ReLU network, its calibration *and*
evaluation inputs (``{input name: array}``) and extra ``convert`` keyword
arguments. The remaining fields say what the spiking model should compute:

- ``reference``: the ANN whose output the time-averaged SNN output approaches
  (default ``ann``; e.g. the AveragePool twin for ``maxpool="avg"``);
- ``converges``: False where rate coding is not expected to reproduce the
  reference (MaxPool kept over spikes over-counts; a Softmax applied per step
  is not the softmax of the averaged logits);
- ``warns``: a regex that a UserWarning raised by ``convert`` must match.

Every model is small (a few thousand parameters at most), seeded, and built with
``onnx.helper`` except ``relu6_torch`` (TorchScript exporter). ``convert_case``
converts a case the way the tests do: Max calibration over all its data in one
batch, so every scale is the true maximum of its activation.

``PRODUCERS`` holds builders ``(directory) -> PatternCase`` for models as other
tools write them (torch dynamo and TorchScript exporters, skl2onnx, a Keras-style
NHWC graph, old and new opsets); ``tests/test_producers.py`` checks them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnx_snn import SpikingModel, convert
from onnx_snn.runtime import SpikingSession

#: Samples per pattern: calibration and evaluation use the same inputs.
SAMPLES = 16
IMAGE = (3, 8, 8)


@dataclass
class PatternCase:
    name: str
    ann: onnx.ModelProto
    data: dict[str, np.ndarray]
    kwargs: dict[str, Any] = field(default_factory=dict)
    reference: onnx.ModelProto | None = None
    converges: bool = True
    warns: str | None = None
    output: str | None = None           # the output to compare (default: the first)
    expected: np.ndarray | None = None  # the independent answer, when not the ANN in ORT
    path: Path | None = None            # where a producer saved the model
    signed: tuple[str, ...] = ()        # tensors that must get a signed neuron (by hand)

    @property
    def target(self) -> onnx.ModelProto:
        """The ANN that the SNN's mean output should approach."""
        return self.reference if self.reference is not None else self.ann


def convert_case(case: PatternCase, **overrides: Any) -> SpikingModel:
    """``convert`` with Max calibration on all of ``case.data`` as one batch."""
    rows = max(len(v) for v in case.data.values())
    kwargs = {"progress": False, "batch_size": rows, **case.kwargs, **overrides}
    return convert(case.ann, case.data, **kwargs)


def expected_output(case: PatternCase) -> np.ndarray:
    """What the SNN's mean output should approach: ``case.expected`` or the
    reference ANN's output ``case.output`` in onnxruntime."""
    if case.expected is not None:
        return case.expected
    names = [o.name for o in case.target.graph.output]
    return run_ann(case.target, case.data)[names.index(case.output) if case.output else 0]


def rate_coding_errors(case: PatternCase, snn: onnx.ModelProto, steps=(16, 128, 1024)
                       ) -> tuple[list[float], np.ndarray]:
    """``max |mean SNN output over the first t steps - expected| / max |expected|`` for
    each t in ``steps`` (one run at the largest), and the per-step output."""
    outputs = SpikingSession(snn).run(case.data, max(steps)).outputs
    per_step = outputs[case.output] if case.output else next(iter(outputs.values()))
    expected = expected_output(case)
    if per_step.shape[1:] != expected.shape:
        raise AssertionError(f"{case.name}: per-step output {per_step.shape} does not match "
                             f"[T, *{expected.shape}]")
    scale = float(np.abs(expected).max())
    return [float(np.abs(per_step[:t].mean(axis=0) - expected).max()) / scale
            for t in steps], per_step


def run_ann(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of an ANN in onnxruntime (the independent answer)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def tensor_values(model: onnx.ModelProto, name: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The value of an intermediate tensor ``name`` of an ANN (made a graph output)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return run_ann(probe, feed)[-1]


# --------------------------------------------------------------------------- builder

class Net:
    """Accumulates nodes and seeded initializers; every op returns its output name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value, dtype=np.float32, prefix: str = "k") -> str:
        name = self._name(prefix)
        self.inits[name] = np.asarray(value, dtype=dtype)
        return name

    def op(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        name = name or self._name(op.lower())
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, pad: int | None = None,
             gain: float = 1.0, name: str | None = None) -> str:
        pad = k // 2 if pad is None else pad
        w = self.rng.normal(size=(cout, cin, k, k)) * gain / np.sqrt(cin * k * k)
        b = self.rng.normal(size=cout) * 0.1 + 0.1
        return self.op("Conv", [x, self.const(w), self.const(b)], name,
                       kernel_shape=[k, k], pads=[pad] * 4)

    def dense(self, x: str, n_in: int, n_out: int, name: str | None = None) -> str:
        """MatMul + Add (the split form of a fully connected layer)."""
        w = self.rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
        b = self.rng.normal(size=n_out) * 0.1 + 0.1
        return self.op("Add", [self.op("MatMul", [x, self.const(w)]), self.const(b)], name)

    def gemm(self, x: str, n_in: int, n_out: int, name: str | None = None) -> str:
        w = self.rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
        return self.op("Gemm", [x, self.const(w), self.const(np.zeros(n_out))], name)

    def relu(self, x: str, name: str | None = None) -> str:
        return self.op("Relu", [x], name or self._name("relu"))

    def batch_norm(self, x: str, channels: int, name: str | None = None) -> str:
        rng = self.rng
        params = [rng.uniform(0.5, 1.5, channels), rng.normal(size=channels) * 0.1 + 0.1,
                  rng.normal(size=channels) * 0.1, rng.uniform(0.5, 1.5, channels)]
        return self.op("BatchNormalization", [x, *map(self.const, params)], name)

    def head(self, x: str, channels: int, classes: int = 5) -> str:
        """GlobalAveragePool -> Flatten -> Gemm."""
        flat = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
        return self.gemm(flat, channels, classes, name="fc")

    def model(self, output: str, inputs: dict[str, list] | None = None,
              opset: int = 17) -> onnx.ModelProto:
        """The checked model; ``output`` is renamed to the graph output 'y'."""
        inputs = inputs or {"x": ["N", *IMAGE]}
        nodes = [onnx.NodeProto() for _ in self.nodes]
        for copy, node in zip(nodes, self.nodes):
            copy.CopyFrom(node)
            copy.output[:] = ["y" if o == output else o for o in node.output]
            copy.input[:] = ["y" if i == output else i for i in node.input]
        graph = helper.make_graph(
            nodes, "pattern",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=[numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # types the output
        del model.graph.value_info[:]
        onnx.checker.check_model(model)
        return model


def images(seed: int, count: int = SAMPLES, shape=IMAGE, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": (rng.random((count, *shape)) * scale).astype(np.float32)}


PATTERNS: list[Callable[[], PatternCase]] = []


def pattern(builder: Callable[[], PatternCase]) -> Callable[[], PatternCase]:
    PATTERNS.append(builder)
    return builder


def pattern_names() -> list[str]:
    return [builder.__name__ for builder in PATTERNS]


def build(name: str) -> PatternCase:
    case = {builder.__name__: builder for builder in PATTERNS}[name]()
    assert case.name == name
    return case


# --------------------------------------------------------------------------- residuals

@pattern
def residual_add() -> PatternCase:
    """ResNet basic block: relu(conv(relu(conv(r1))) + r1)."""
    n = Net(10)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    r2 = n.relu(n.conv(r1, 8, 8), "relu2")
    r3 = n.relu(n.op("Add", [n.conv(r2, 8, 8), r1]), "relu3")
    return PatternCase("residual_add", n.model(n.head(r3, 8)), images(10))


@pattern
def residual_sum() -> PatternCase:
    """Three-way Sum of a conv path, an identity skip and a 1x1 projection."""
    n = Net(11)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    main = n.conv(n.relu(n.conv(r1, 8, 8), "relu2"), 8, 8)
    r3 = n.relu(n.op("Sum", [main, r1, n.conv(r1, 8, 8, k=1)]), "relu3")
    return PatternCase("residual_sum", n.model(n.head(r3, 8)), images(11))


@pattern
def residual_static_skip() -> PatternCase:
    """The skip leaves from the static region (a conv before the first neuron) and
    jumps over a neuron: relu(conv(relu(c0)) + c0), c0 = conv(x)."""
    n = Net(12)
    c0 = n.conv("x", 3, 8)
    r1 = n.relu(c0, "relu1")
    r2 = n.relu(n.op("Add", [n.conv(r1, 8, 8), c0]), "relu2")
    return PatternCase("residual_static_skip", n.model(n.head(r2, 8)), images(12))


@pattern
def residual_input_skip() -> PatternCase:
    """The graph input itself is the skip: relu(conv(relu(conv(x))) + x)."""
    n = Net(13)
    r1 = n.relu(n.conv("x", 3, 6), "relu1")
    r2 = n.relu(n.op("Add", ["x", n.conv(r1, 6, 3)]), "relu2")
    return PatternCase("residual_input_skip", n.model(n.head(r2, 3)), images(13))


# --------------------------------------------------------------------------- concatenation

@pattern
def concat_inception() -> PatternCase:
    """Parallel 1x1, 1x1-3x3 and pool-1x1 branches plus a bare pooled input branch
    (static) concatenated on channels."""
    n = Net(20)
    b1 = n.relu(n.conv("x", 3, 4, k=1), "b1_relu")
    b2 = n.relu(n.conv(n.relu(n.conv("x", 3, 4, k=1), "b2a_relu"), 4, 4), "b2b_relu")
    pooled = n.op("AveragePool", ["x"], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4)
    b3 = n.relu(n.conv(pooled, 3, 4, k=1), "b3_relu")
    cat = n.op("Concat", [b1, b2, b3, pooled], axis=1)
    r = n.relu(n.conv(cat, 15, 8), "relu_out")
    return PatternCase("concat_inception", n.model(n.head(r, 8)), images(20))


@pattern
def concat_fire() -> PatternCase:
    """SqueezeNet fire module: squeeze 1x1 -> expand 1x1 || expand 3x3 -> Concat,
    then SqueezeNet's conv-relu-global-pool classifier."""
    n = Net(21)
    stem = n.relu(n.conv("x", 3, 8), "stem_relu")
    squeeze = n.relu(n.conv(stem, 8, 4, k=1), "squeeze_relu")
    e1 = n.relu(n.conv(squeeze, 4, 6, k=1), "expand1_relu")
    e3 = n.relu(n.conv(squeeze, 4, 6), "expand3_relu")
    cat = n.op("Concat", [e1, e3], axis=1)
    logits = n.relu(n.conv(cat, 12, 5, k=1, gain=2.0), "classifier_relu")
    out = n.op("Flatten", [n.op("GlobalAveragePool", [logits])], axis=1)
    return PatternCase("concat_fire", n.model(out), images(21))


@pattern
def concat_dense() -> PatternCase:
    """DenseNet-like: each layer reads the concatenation of all earlier features,
    the input among them."""
    n = Net(22)
    f0 = n.relu(n.conv("x", 3, 4), "relu0")
    n1 = n.conv(f0, 4, 4)
    a1 = n.relu(n.op("Concat", ["x", f0, n1], axis=1), "relu1")
    n2 = n.conv(a1, 11, 4)
    a2 = n.relu(n.op("Concat", ["x", f0, n1, n2], axis=1), "relu2")
    return PatternCase("concat_dense", n.model(n.head(a2, 15)), images(22))


# --------------------------------------------------------------------------- pooling, shapes

@pattern
def average_pools() -> PatternCase:
    """AveragePool (strided, and padded with count_include_pad) and GlobalAveragePool."""
    n = Net(30)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    p1 = n.op("AveragePool", [r1], kernel_shape=[2, 2], strides=[2, 2])
    r2 = n.relu(n.conv(p1, 8, 8), "relu2")
    p2 = n.op("AveragePool", [r2], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
              count_include_pad=1)
    return PatternCase("average_pools", n.model(n.head(p2, 8)), images(30))


@pattern
def flatten_reshape_transpose() -> PatternCase:
    """NCHW -> NHWC Transpose, Reshape [0, 64, 4], per-position MatMul+Add, Flatten."""
    n = Net(31)
    r1 = n.relu(n.conv("x", 3, 4), "relu1")
    nhwc = n.op("Transpose", [r1], perm=[0, 2, 3, 1])
    seq = n.op("Reshape", [nhwc, n.const([0, 64, 4], np.int64)])
    r2 = n.relu(n.dense(seq, 4, 6), "relu2")
    flat = n.op("Flatten", [r2], axis=1)
    return PatternCase("flatten_reshape_transpose", n.model(n.gemm(flat, 384, 5)), images(31))


@pattern
def pad() -> PatternCase:
    """Constant Pad with a non-zero value, and reflect Pad, on spiking tensors."""
    n = Net(32)
    r1 = n.relu(n.conv("x", 3, 6, pad=0), "relu1")  # [N, 6, 6, 6]
    p1 = n.op("Pad", [r1, n.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64), n.const(0.25)],
              mode="constant")
    r2 = n.relu(n.conv(p1, 6, 6, pad=0), "relu2")  # [N, 6, 6, 6]
    p2 = n.op("Pad", [r2, n.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64)], mode="reflect")
    r3 = n.relu(n.conv(p2, 6, 6, pad=0), "relu3")
    return PatternCase("pad", n.model(n.head(r3, 6)), images(32))


@pattern
def gemm_transposed() -> PatternCase:
    """Gemm transB=1; Transpose -> Gemm transA=1; Gemm with alpha, beta and transB."""
    n = Net(33)
    rng = n.rng
    w1 = rng.normal(size=(16, 12)) / np.sqrt(12)                  # [out, in]: transB
    h1 = n.op("Gemm", ["x", n.const(w1), n.const(rng.normal(size=16) * 0.1 + 0.1)],
              transB=1)
    t = n.op("Transpose", [n.relu(h1, "relu1")], perm=[1, 0])    # [16, N]
    w2 = rng.normal(size=(16, 10)) / 4
    h2 = n.op("Gemm", [t, n.const(w2), n.const(rng.normal(size=10) * 0.1 + 0.1)],
              transA=1)
    w3 = rng.normal(size=(4, 10)) / np.sqrt(10)
    y = n.op("Gemm", [n.relu(h2, "relu2"), n.const(w3), n.const(rng.normal(size=4) * 0.1)],
             transB=1, alpha=0.5, beta=2.0)
    data = {"x": np.random.default_rng(33).normal(size=(SAMPLES, 12)).astype(np.float32)}
    return PatternCase("gemm_transposed", n.model(y, {"x": ["N", 12]}), data)


@pattern
def matmul_add() -> PatternCase:
    """Fully connected layers written as MatMul + Add (as many exporters do)."""
    n = Net(34)
    r1 = n.relu(n.dense("x", 12, 16), "relu1")
    r2 = n.relu(n.dense(r1, 16, 16), "relu2")
    data = {"x": np.random.default_rng(34).normal(size=(SAMPLES, 12)).astype(np.float32)}
    return PatternCase("matmul_add", n.model(n.dense(r2, 16, 4), {"x": ["N", 12]}), data)


# --------------------------------------------------------------------------- fixed batch

@pattern
def shuffle_static_batch() -> PatternCase:
    """ShuffleNet channel shuffle in a model exported with a static batch of 1:
    input [1, 3, 8, 8], Reshape to the constant [1, 2, 4, 8, 8], Transpose, Reshape
    to [1, 8, 8, 8]. The ANN only takes one sample."""
    n = Net(40)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    grouped = n.op("Reshape", [r1, n.const([1, 2, 4, 8, 8], np.int64)])
    swapped = n.op("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    shuffled = n.op("Reshape", [swapped, n.const([1, 8, 8, 8], np.int64)])
    r2 = n.relu(n.conv(shuffled, 8, 8), "relu2")
    return PatternCase("shuffle_static_batch", n.model(n.head(r2, 8), {"x": [1, *IMAGE]}),
                       images(40, count=1))


@pattern
def view_one_minus_one() -> PatternCase:
    """torch ``x.view(1, -1)`` traced at batch 1: Reshape to the constant [1, -1]
    before the classifier; the input batch is declared dynamic."""
    n = Net(41)
    r1 = n.relu(n.conv("x", 3, 4), "relu1")
    pooled = n.op("AveragePool", [r1], kernel_shape=[2, 2], strides=[2, 2])
    flat = n.op("Reshape", [pooled, n.const([1, -1], np.int64)])
    r2 = n.relu(n.gemm(flat, 64, 16), "relu2")
    return PatternCase("view_one_minus_one", n.model(n.gemm(r2, 16, 5)), images(41, count=1))


# --------------------------------------------------------------------------- normalisation

@pattern
def bn_preactivation() -> PatternCase:
    """Pre-activation residual block: BN -> Relu with no conv right before the BN
    (the first BN reads a conv output that the skip also uses; the second an Add)."""
    n = Net(50)
    c0 = n.conv("x", 3, 8)
    r1 = n.relu(n.batch_norm(c0, 8, "bn1"), "relu1")
    s = n.op("Add", [n.conv(r1, 8, 8), c0])
    r2 = n.relu(n.batch_norm(s, 8, "bn2"), "relu2")
    return PatternCase("bn_preactivation", n.model(n.head(r2, 8)), images(50))


def lrn_model() -> onnx.ModelProto:
    n = Net(51)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    norm = n.op("LRN", [r1], "lrn", size=3, alpha=1e-4, beta=0.75, bias=2.0)
    r2 = n.relu(n.conv(norm, 8, 8, gain=2.0), "relu2")
    return n.model(n.head(r2, 8))


@pattern
def lrn() -> PatternCase:
    """AlexNet-style LRN after a Relu (bias 2 so it matters): a time-difference op, and
    the Conv after it, which reads its (not rectified) output, gets a signed neuron."""
    return PatternCase("lrn", lrn_model(), images(51), signed=("lrn_out",))


# --------------------------------------------------------------------------- max pooling

def maxpool_model(pool: str = "MaxPool") -> onnx.ModelProto:
    """conv-relu-<pool 2x2/2>-conv-relu-head; ``pool`` 'AveragePool' gives the twin."""
    n = Net(60)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    p1 = n.op(pool, [r1], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    r2 = n.relu(n.conv(p1, 8, 8), "relu2")
    return n.model(n.head(r2, 8))


#: What the MaxPool warnings must say.
OVERCOUNT_WARNING = r"(?i)over-?count"
SOFTMAX_WARNING = r"averaging per-step probabilities is biased"
AVERAGE_WARNING = r"(?i)average"


@pattern
def maxpool_keep() -> PatternCase:
    """Default policy: the MaxPool stays and reads spikes (over-counts: no convergence)."""
    return PatternCase("maxpool_keep", maxpool_model(), images(60), converges=False,
                       warns=OVERCOUNT_WARNING)


@pattern
def maxpool_before() -> PatternCase:
    """``maxpool="before"``: relu(maxpool(x)) == maxpool(relu(x)), so exact."""
    return PatternCase("maxpool_before", maxpool_model(), images(60), {"maxpool": "before"})


@pattern
def maxpool_avg() -> PatternCase:
    """``maxpool="avg"``: the SNN follows the AveragePool twin of the ANN."""
    return PatternCase("maxpool_avg", maxpool_model(), images(60), {"maxpool": "avg"},
                       reference=maxpool_model("AveragePool"), warns=AVERAGE_WARNING)


# --------------------------------------------------------------------------- clip / ReLU6

def clip_model(opset: int) -> onnx.ModelProto:
    """conv-Clip(0, 6)-conv-relu-head; the first conv is strong enough to clip."""
    n = Net(70)
    c1 = n.conv("x", 3, 8, gain=12.0, name="conv_pre")
    if opset >= 11:
        clipped = n.op("Clip", [c1, n.const(0.0), n.const(6.0)], "relu6")
    else:
        clipped = n.op("Clip", [c1], "relu6", min=0.0, max=6.0)
    r2 = n.relu(n.conv(clipped, 8, 8, gain=0.3), "relu2")
    return n.model(n.head(r2, 8), opset=opset)


@pattern
def clip_relu6() -> PatternCase:
    """Clip(x, 0, 6) with min/max as constant inputs (opset 13)."""
    return PatternCase("clip_relu6", clip_model(13), images(70))


@pattern
def clip_relu6_opset9() -> PatternCase:
    """Clip with min/max attributes (opset 9), upgraded to 13 during preparation."""
    return PatternCase("clip_relu6_opset9", clip_model(9), images(70))


@pattern
def relu6_torch() -> PatternCase:
    """torch.nn.ReLU6 as the TorchScript exporter writes it (opset 17)."""
    import torch
    from torch import nn

    from onnx_snn.export.torch import export_torch

    torch.manual_seed(71)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        net[0].weight.mul_(20.0)  # so that some activations exceed 6
    data = images(71)
    return PatternCase("relu6_torch", export_torch(net, torch.from_numpy(data["x"][:2]),
                                                   dynamo=False), data)


# --------------------------------------------------------------------------- softmax output

def softmax_model(softmax: bool) -> onnx.ModelProto:
    n = Net(80)
    r1 = n.relu(n.conv("x", 3, 8), "relu1")
    logits = n.head(r1, 8)
    out = n.op("Softmax", [logits], "softmax", axis=1) if softmax else logits
    return n.model(out)


@pattern
def softmax_kept() -> PatternCase:
    """Softmax producing the graph output: a time-difference op, whose mean output is
    the softmax of the mean logits, so it converges to the ANN's probabilities."""
    return PatternCase("softmax_kept", softmax_model(True), images(80))


@pattern
def softmax_dropped() -> PatternCase:
    """``drop_output_softmax=True``: output 'y' carries the logits."""
    return PatternCase("softmax_dropped", softmax_model(True), images(80),
                       {"drop_output_softmax": True}, reference=softmax_model(False))


# =========================================================================== producers

PRODUCERS: list[Callable[[Path], PatternCase]] = []


def producer(builder: Callable[[Path], PatternCase]) -> Callable[[Path], PatternCase]:
    PRODUCERS.append(builder)
    return builder


def torch_bn_cnn() -> Any:
    """Conv-BN-ReLU-AvgPool-BN-Conv-BN-ReLU-GAP-Linear on [N, 1, 8, 8], seeded, with
    non-trivial BatchNorm statistics. The BN after the pool has no conv to fold into."""
    import torch
    from torch import nn

    torch.manual_seed(100)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AvgPool2d(2), nn.BatchNorm2d(6),
                        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        for module in net:
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.2)
    return net.eval()


def _torch_case(name: str, directory: Path, dynamo: bool) -> PatternCase:
    import torch

    from onnx_snn.export.torch import export_torch

    net = torch_bn_cnn()
    x = images(100, shape=(1, 8, 8))
    path = Path(directory) / f"{name}.onnx"
    ann = export_torch(net, torch.from_numpy(x["x"][:2]), path, dynamo=dynamo)
    with torch.no_grad():
        expected = net(torch.from_numpy(x["x"])).numpy()
    return PatternCase(name, ann, x, expected=expected, path=path)


@producer
def torch_dynamo_bn_cnn(directory: Path) -> PatternCase:
    """torch.onnx.export(dynamo=True): opset >= 18, weights in <path>.data."""
    return _torch_case("torch_dynamo_bn_cnn", directory, dynamo=True)


@producer
def torch_torchscript_bn_cnn(directory: Path) -> PatternCase:
    """torch.onnx.export(dynamo=False), opset 17."""
    return _torch_case("torch_torchscript_bn_cnn", directory, dynamo=False)


@functools.lru_cache(maxsize=1)
def digits_classifier() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An sklearn MLPClassifier (relu, 32-16 hidden) trained for 30 iterations on
    digits scaled to [0, 1]: ``(clf, x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), activation="relu", max_iter=30,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    return clf, x_train, y_train, x_test, y_test


def sklearn_onnx(zipmap: bool) -> onnx.ModelProto:
    """The digits classifier through skl2onnx, with or without its ZipMap output."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = digits_classifier()[0]
    options = None if zipmap else {id(clf): {"zipmap": False}}
    return convert_sklearn(clf, initial_types=[("X", FloatTensorType([None, 64]))],
                           options=options)


def _sklearn_case(name: str, zipmap: bool) -> PatternCase:
    clf, x_train = digits_classifier()[:2]
    # per-step Softmax: the mean of probabilities is not softmax of the mean logits
    return PatternCase(name, sklearn_onnx(zipmap), {"X": x_train}, converges=False,
                       output="output_probability" if zipmap else "probabilities",
                       expected=clf.predict_proba(x_train).astype(np.float32))


@producer
def sklearn_mlp_zipmap(directory: Path) -> PatternCase:
    """skl2onnx defaults: label + ZipMap'ed probabilities (sequence of maps)."""
    return _sklearn_case("sklearn_mlp_zipmap", zipmap=True)


@producer
def sklearn_mlp_tensor(directory: Path) -> PatternCase:
    """skl2onnx with zipmap=False: label + probability tensor."""
    return _sklearn_case("sklearn_mlp_tensor", zipmap=False)


@producer
def keras_style_nhwc(directory: Path) -> PatternCase:
    """An NHWC graph as Keras converters write it: [N, 8, 8, 1] -> Transpose to NCHW
    -> Conv -> Relu -> Transpose back to NHWC -> Reshape [-1, 384] -> MatMul+Add
    -> Relu -> MatMul+Add, with TF-style tensor names."""
    n = Net(110)
    nchw = n.op("Transpose", ["input_1"], "sequential/conv2d/Conv2D__6", perm=[0, 3, 1, 2])
    conv = n.conv(nchw, 1, 6, name="sequential/conv2d/BiasAdd")
    relu = n.relu(conv, "sequential/conv2d/Relu")
    nhwc = n.op("Transpose", [relu], "sequential/conv2d/Relu__8", perm=[0, 2, 3, 1])
    flat = n.op("Reshape", [nhwc, n.const([-1, 384], np.int64)], "sequential/flatten/Reshape")
    hidden = n.relu(n.dense(flat, 384, 16, name="sequential/dense/BiasAdd"),
                    "sequential/dense/Relu")
    y = n.dense(hidden, 16, 10, name="sequential/dense_1/BiasAdd")
    data = {"input_1": images(110, shape=(8, 8, 1))["x"]}
    return PatternCase("keras_style_nhwc", n.model(y, {"input_1": ["N", 8, 8, 1]}, opset=13),
                       data)


def opset_base_model() -> onnx.ModelProto:
    """A CNN with Conv, Relu, AveragePool, Add, Concat, Reshape and Gemm at opset 7.

    It is built at 7 and converted *up*: onnx's version converter has no downgrade
    adapter for Relu from 13 to 12, so a base at 13 cannot be taken down to 7 or 9.
    """
    n = Net(90)
    r1 = n.relu(n.conv("x", 3, 6), "relu1")
    pooled = n.op("AveragePool", [r1], kernel_shape=[2, 2], strides=[2, 2])
    r2 = n.relu(n.op("Add", [n.conv(pooled, 6, 6), pooled]), "relu2")
    cat = n.op("Concat", [r2, pooled], axis=1)
    flat = n.op("Reshape", [cat, n.const([0, -1], np.int64)])
    y = n.gemm(n.relu(n.gemm(flat, 192, 16), "relu3"), 16, 5)
    return n.model(y, opset=7)


#: Opsets the version-converter cases cover: old, older, the minimum, the newest.
OPSETS = (7, 9, 13, onnx.defs.onnx_opset_version())


def _opset_case(opset: int) -> PatternCase:
    base = opset_base_model()
    ann = onnx.version_converter.convert_version(base, opset)
    return PatternCase(f"opset_{opset}", ann, images(90), reference=base)


for _opset in OPSETS:
    def _builder(directory: Path, opset: int = _opset) -> PatternCase:
        return _opset_case(opset)

    _builder.__name__ = f"opset_{_opset}"
    _builder.__doc__ = f"The opset-7 base model converted to ai.onnx opset {_opset}."
    PRODUCERS.append(_builder)
