"""What onnx-snn knows about each ONNX op type, in one place.

Each op type with a role in the conversion has one ``OpFacts`` entry in ``OPS``;
the passes (scale folding, costs, activation policies, control-flow checks,
time folding, formats) read them here. Supporting a new op means adding or
extending its entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

#: The oldest ai.onnx opset onnx-snn works in; older models are converted up to it.
MIN_OPSET = 13
#: Op domains of the ONNX standard (None and "" are the default domain).
STANDARD_DOMAINS = frozenset({None, "", "ai.onnx", "ai.onnx.ml"})
#: Op domains that onnxruntime implements.
ONNXRUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft",
                                 "ai.onnx.preview.training"})

#: (layer node, its constant weight, its output shape per sample) -> (MACs per sample,
#: operations per input element, i.e. the fan-out of one spike).
Costs = Callable[[gs.Node, np.ndarray, tuple], "tuple[int, int]"]


def _conv_costs(node: gs.Node, weight: np.ndarray, out_shape: tuple) -> tuple[int, int]:
    groups = int(node.attrs.get("group", 1))
    c_out, c_in_per_group, *kernel = weight.shape
    kernel_size = int(np.prod(kernel))
    return int(np.prod(out_shape)) * c_in_per_group * kernel_size, c_out * kernel_size // groups


def _gemm_costs(node: gs.Node, weight: np.ndarray, out_shape: tuple) -> tuple[int, int]:
    k, m = weight.shape[::-1] if node.attrs.get("transB", 0) else weight.shape
    return int(k * m), int(m)


def _matmul_costs(node: gs.Node, weight: np.ndarray, out_shape: tuple) -> tuple[int, int]:
    k, m = weight.shape[-2:]  # [..., K] x [K, M]
    return int(np.prod(out_shape[:-1], dtype=np.int64)) * int(k * m), int(m)


@dataclass(frozen=True)
class OpFacts:
    """The role of one op type.

    - ``costs``: a layer with a constant weight (input 1): how to count its MACs
      and fan-out; output scales of neurons fold into that weight;
    - ``learned``: holds trained parameters (nothing of the kind may follow an
      output head);
    - ``scale_passes``: how an output scale s passes through the op towards the
      next weighted layer: "always" (linear), "nonnegative" (MaxPool, s >= 0),
      "pad" (Pad with zeros), "flatten" (Flatten, Reshape to [N, F]);
    - ``nonlinear``: an activation with no rate-coded IF equivalent;
    - ``output_head``: a nonlinearity at the output that ``drop_output_softmax``
      may remove;
    - ``shape_only``: its output is a shape, not data;
    - ``control_flow``: it holds subgraphs;
    - ``linear_in``: how its output depends on time-varying inputs, when it is
      affine: "all" (affine in all of them together: Add, Concat), "each" (in each
      one alone, so not when two vary: Mul, MatMul), "first" (in input 0 only; the
      others are parameters: Reshape, Div). Any other op whose inputs vary over
      time becomes a time-difference op (docs/semantics.md, "Time-difference ops");
    - ``keeps_rectified``: moves, sums or pools values without changing their sign,
      so a rectified (spiking) input stays rectified;
    - ``layout``: where its output keeps channels (``onnx_snn.graph.layout``):
      "first" (axis 1: Conv, pooling, BatchNormalization), "last" (MatMul, Gemm),
      "permute" (Transpose), "reshape" (the axes change: unknown); an op without
      one keeps its first input's layout when its output has the same rank.
    """

    costs: Costs | None = None
    learned: bool = False
    scale_passes: str | None = None
    nonlinear: bool = False
    output_head: bool = False
    shape_only: bool = False
    control_flow: bool = False
    linear_in: str | None = None
    keeps_rectified: bool = False
    layout: str | None = None


_NONLINEAR = OpFacts(nonlinear=True)
#: Ops that only move, select or sum values (input 0; the others are parameters).
_MOVES = OpFacts(linear_in="first", keeps_rectified=True)
_RESHAPES = OpFacts(linear_in="first", keeps_rectified=True, layout="reshape")

OPS: dict[str, OpFacts] = {
    "Conv": OpFacts(costs=_conv_costs, learned=True, linear_in="each", layout="first"),
    "Gemm": OpFacts(costs=_gemm_costs, learned=True, linear_in="each", layout="last"),
    "MatMul": OpFacts(costs=_matmul_costs, learned=True, linear_in="each", layout="last"),
    "ConvTranspose": OpFacts(learned=True, linear_in="each", layout="first"),
    "BatchNormalization": OpFacts(learned=True, linear_in="first", layout="first"),
    "AveragePool": OpFacts(scale_passes="always", linear_in="first", keeps_rectified=True,
                           layout="first"),
    "GlobalAveragePool": OpFacts(scale_passes="always", linear_in="first",
                                 keeps_rectified=True, layout="first"),
    "MaxPool": OpFacts(scale_passes="nonnegative", keeps_rectified=True, layout="first"),
    "GlobalMaxPool": OpFacts(keeps_rectified=True, layout="first"),
    "ReduceMax": OpFacts(keeps_rectified=True),
    "Pad": OpFacts(scale_passes="pad", linear_in="first", keeps_rectified=True),
    "Flatten": OpFacts(scale_passes="flatten", linear_in="first", keeps_rectified=True,
                       layout="reshape"),
    "Reshape": OpFacts(scale_passes="flatten", linear_in="first", keeps_rectified=True,
                       layout="reshape"),
    "Transpose": OpFacts(linear_in="first", keeps_rectified=True, layout="permute"),
    **{op: _RESHAPES for op in (
        "Squeeze", "Unsqueeze", "Gather", "DepthToSpace", "SpaceToDepth")},
    **{op: _MOVES for op in (
        "Slice", "Split", "GatherElements", "Expand", "Tile", "Identity", "Dropout",
        "ReduceMean", "ReduceSum", "Resize", "Upsample", "CumSum", "Cast", "CastLike")},
    **{op: OpFacts(linear_in="all", keeps_rectified=True) for op in ("Add", "Sum", "Concat")},
    "Sub": OpFacts(linear_in="all"),
    "Neg": OpFacts(linear_in="all"),
    "Mean": OpFacts(linear_in="all"),
    "Mul": OpFacts(linear_in="each"),
    "Einsum": OpFacts(linear_in="each"),
    "Div": OpFacts(linear_in="first"),
    "Shape": OpFacts(shape_only=True),
    "Size": OpFacts(shape_only=True),
    "If": OpFacts(control_flow=True),
    "Loop": OpFacts(control_flow=True),
    "Scan": OpFacts(control_flow=True),
    # a Clip is a rectifier when its min is 0 (onnx_snn.graph.activations), else this
    "Clip": _NONLINEAR,
    **{op: _NONLINEAR for op in (
        "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "HardSigmoid",
        "HardSwish", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Erf", "Swish")},
    "Softmax": OpFacts(nonlinear=True, output_head=True),
    "LogSoftmax": OpFacts(nonlinear=True, output_head=True),
}
_NONE = OpFacts()


def facts(op: str) -> OpFacts:
    """The facts of an op type (all false for an op with no role)."""
    return OPS.get(op, _NONE)


def ops_where(test: Callable[[OpFacts], object]) -> frozenset[str]:
    """The op types whose facts pass ``test``."""
    return frozenset(op for op, entry in OPS.items() if test(entry))


WEIGHTED = ops_where(lambda f: f.costs)
SHAPE_OPS = ops_where(lambda f: f.shape_only)
CONTROL_FLOW = ops_where(lambda f: f.control_flow)


def affine_over_time(op: str, varying: list[bool]) -> bool:
    """Whether an ``op`` node is affine in the inputs that vary over time (``varying``,
    one flag per input), so that it commutes with averaging over steps; otherwise it
    becomes a time-difference op (docs/semantics.md, "Time-difference ops").
    ``linear_in`` of ``OpFacts`` says how."""
    mode = facts(op).linear_in
    if not any(varying) or mode == "all":
        return True
    if mode == "each":
        return sum(varying) == 1
    return mode == "first" and not any(varying[1:])

