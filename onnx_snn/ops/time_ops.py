"""The time-difference bookkeeping ops (docs/semantics.md, "Time-difference ops") and
their ONNX function bodies.

Each op has the signature ``Op(X, T) -> Y``: ``X`` float32 [T·N, ...] (any shape
whose element count T divides: it is read as T rows, one per step), ``T`` the
number of steps (int64, one value), ``Y`` of ``X``'s shape. Row by row, with
c_t = t (a CumSum of ones, so streaming counts steps the same way):

- ``RunningSum``: y_t = x_1 + … + x_t (a CumSum over time);
- ``RunningMean``: the running sum divided by c_t;
- ``Difference``: y_t = x_t − x_{t−1} (x_0 = 0);
- ``StepDifference``: y_t = c_t·x_t − c_{t−1}·x_{t−1} (the difference of t·f).

The function body is the reference: onnxruntime runs it when the native library
(``custom_ops/``, ``onnx_snn.ops.native``) is not registered, the standard format
inlines it, and the native kernels compute the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from onnx_snn.ops.function_bodies import DOMAIN, DOMAIN_VERSION

RUNNING_SUM = "RunningSum"
RUNNING_MEAN = "RunningMean"
DIFFERENCE = "Difference"
STEP_DIFFERENCE = "StepDifference"
#: The op types, each with whether it reads running sums (True) or takes differences.
TIME_OPS = {RUNNING_SUM: True, RUNNING_MEAN: True, DIFFERENCE: False, STEP_DIFFERENCE: False}
#: Ops whose rows are scaled by the step count c_t.
COUNTED = {RUNNING_MEAN, STEP_DIFFERENCE}
#: The most steps a run of a model that counts steps or sums over them may take: the
#: count c_t and the sums are float32, which holds every whole number up to 2^24.
MAX_COUNTED_STEPS = 1 << 24


def is_time_op(node: onnx.NodeProto) -> bool:
    """True for a node of one of the time ops."""
    return node.domain == DOMAIN and node.op_type in TIME_OPS


def _ints(name: str, values: Sequence[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(
        name, TensorProto.INT64, [len(values)], list(values)))


def time_op_function(op_type: str, opset: int) -> onnx.FunctionProto:
    """The function body of ``op_type`` for a model whose ai.onnx opset is ``opset``."""
    make = helper.make_node
    nodes = [_ints("one_row", [1]), _ints("all_rows", [-1]),
             make("Constant", [], ["time_axis"], value=helper.make_tensor(
                 "time_axis", TensorProto.INT64, [], [0])),
             make("Reshape", ["T", "one_row"], ["steps"]),
             make("Concat", ["steps", "all_rows"], ["rows_shape"], axis=0),
             make("Reshape", ["X", "rows_shape"], ["rows"])]
    if op_type in COUNTED:
        nodes += [make("Concat", ["steps", "one_row"], ["counts_shape"], axis=0),
                  make("ConstantOfShape", ["counts_shape"], ["ones"],
                       value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
                  make("CumSum", ["ones", "time_axis"], ["counts"])]
    if TIME_OPS[op_type]:
        nodes.append(make("CumSum", ["rows", "time_axis"], ["summed"]))
        result = "summed"
        if op_type == RUNNING_MEAN:
            nodes.append(make("Div", ["summed", "counts"], ["mean"]))
            result = "mean"
    else:
        now = "rows"
        if op_type == STEP_DIFFERENCE:
            nodes.append(make("Mul", ["rows", "counts"], ["scaled"]))
            now = "scaled"
        nodes += [_ints("pads", [1, 0, 0, 0]), _ints("first", [0]),
                  make("Pad", [now, "pads"], ["shifted"]),
                  make("Slice", ["shifted", "first", "all_rows"], ["previous"]),
                  make("Sub", [now, "previous"], ["step"])]
        result = "step"
    nodes += [make("Shape", ["X"], ["x_shape"]), make("Reshape", [result, "x_shape"], ["Y"])]
    return helper.make_function(DOMAIN, op_type, inputs=["X", "T"], outputs=["Y"], nodes=nodes,
                                opset_imports=[helper.make_opsetid("", opset)],
                                doc_string=f"{op_type} over a time-folded input [T*N, ...].")


def time_op_model(op_type: str, x_dims: Sequence[int | str | None],
                  opset: int = 17) -> onnx.ModelProto:
    """A model of one ``op_type`` node with its function: inputs ``X`` (float32,
    ``x_dims``) and ``T``, output ``Y``. For probing a backend, benchmarks and tests."""
    node = helper.make_node(op_type, ["X", "T"], ["Y"], name=op_type.lower(), domain=DOMAIN)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_dims)),
         helper.make_tensor_value_info("T", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(x_dims))])
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]
    model = helper.make_model(graph, functions=[time_op_function(op_type, opset)],
                              opset_imports=opsets)
    model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
    return model
