"""The ONNX function body of the ``IFNode`` op.

``IFNode(X, T) -> S`` takes the time-folded input ``X`` of shape [T·N, ...] and
the number of steps ``T`` (int64 scalar), and returns 0/1 spikes of ``X``'s
shape. The body reshapes ``X`` to [T, F] and runs ``if_step`` in a Scan over T.
An ``If`` on the ``hard_reset`` attribute picks the Scan for the reset mode
once per call, so each step does only the arithmetic of its own reset.

The body is a model-local function, so a converted model runs on plain
onnxruntime, in any binding, with nothing registered (SPEC §8).
"""

from __future__ import annotations

import itertools

import onnx
from onnx import TensorProto, helper

from onnx_snn.ops.dynamics import if_step

DOMAIN = "onnx_snn"
DOMAIN_VERSION = 1
IF_OP_TYPE = "IFNode"
#: Attributes of IFNode, in the order the function declares them.
IF_ATTRIBUTES = ("v_threshold", "v_reset", "v_init", "hard_reset")
#: The oldest ai.onnx opset the body is valid in (GreaterOrEqual, Slice/Squeeze inputs).
MIN_OPSET = 13


class GraphArithmetic:
    """``Arithmetic`` that appends one ONNX node per operation to ``nodes``."""

    def __init__(self, prefix: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._prefix = prefix
        self._ids = itertools.count()

    def _emit(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"{self._prefix}{op.lower()}{next(self._ids)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def add(self, a: str, b: str) -> str:
        return self._emit("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self._emit("Sub", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self._emit("Mul", [a, b])

    def fire(self, h: str, theta: str) -> str:
        return self._emit("Cast", [self._emit("GreaterOrEqual", [h, theta])],
                          to=TensorProto.FLOAT)


def _attribute_constant(output: str, attribute: str, kind: str) -> onnx.NodeProto:
    """A Constant whose value is the function attribute ``attribute``."""
    node = helper.make_node("Constant", [], [output])
    value_type = onnx.AttributeProto.FLOAT if kind == "float" else onnx.AttributeProto.INT
    ref = onnx.AttributeProto(name=f"value_{kind}", ref_attr_name=attribute, type=value_type)
    node.attribute.append(ref)
    return node


def _scan_branch(hard_reset: bool) -> onnx.GraphProto:
    """An If branch: a Scan over the rows of ``seq`` with the IF step as body."""
    tag = "hard" if hard_reset else "soft"
    ops = GraphArithmetic(prefix=f"{tag}_")
    v_new, spikes = if_step(ops, f"{tag}_v", f"{tag}_x", "theta", "v_reset_value", "one",
                            hard_reset=hard_reset)
    feature = [None]  # rank only: named dims would be shared by every inlined IFNode
    body = helper.make_graph(
        ops.nodes, f"if_step_{tag}",
        inputs=[helper.make_tensor_value_info(f"{tag}_v", TensorProto.FLOAT, feature),
                helper.make_tensor_value_info(f"{tag}_x", TensorProto.FLOAT, feature)],
        outputs=[helper.make_tensor_value_info(v_new, TensorProto.FLOAT, feature),
                 helper.make_tensor_value_info(spikes, TensorProto.FLOAT, feature)],
    )
    scan = helper.make_node("Scan", ["v0", "seq"], [f"{tag}_v_final", f"{tag}_spikes"],
                            body=body, num_scan_inputs=1)
    return helper.make_graph(
        [scan], f"if_{tag}_reset", inputs=[],
        outputs=[helper.make_tensor_value_info(f"{tag}_spikes", TensorProto.FLOAT, [None, None])])


def if_node_function(opset: int) -> onnx.FunctionProto:
    """Build the ``IFNode`` function for a model whose ai.onnx opset is ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"IFNode function needs ai.onnx opset >= {MIN_OPSET}, got {opset}")
    const = helper.make_tensor
    nodes = [
        _attribute_constant("theta", "v_threshold", "float"),
        _attribute_constant("v_reset_value", "v_reset", "float"),
        _attribute_constant("v_init_value", "v_init", "float"),
        _attribute_constant("hard_int", "hard_reset", "int"),
        helper.make_node("Constant", [], ["one"], value=const("one", TensorProto.FLOAT, [], [1.0])),
        helper.make_node("Constant", [], ["minus_one"],
                         value=const("minus_one", TensorProto.INT64, [1], [-1])),
        helper.make_node("Constant", [], ["shape1"], value=const("shape1", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["start1"], value=const("start1", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["end2"], value=const("end2", TensorProto.INT64, [1], [2])),
        helper.make_node("Shape", ["X"], ["x_shape"]),
        helper.make_node("Reshape", ["T", "shape1"], ["t1"]),
        helper.make_node("Concat", ["t1", "minus_one"], ["seq_shape"], axis=0),
        helper.make_node("Reshape", ["X", "seq_shape"], ["seq"]),
        helper.make_node("Shape", ["seq"], ["seq_dims"]),
        helper.make_node("Slice", ["seq_dims", "start1", "end2"], ["features"]),
        helper.make_node("Expand", ["v_init_value", "features"], ["v0"]),
        helper.make_node("Cast", ["hard_int"], ["hard"], to=TensorProto.BOOL),
        helper.make_node("If", ["hard"], ["spikes_seq"],
                         then_branch=_scan_branch(hard_reset=True),
                         else_branch=_scan_branch(hard_reset=False)),
        helper.make_node("Reshape", ["spikes_seq", "x_shape"], ["S"]),
    ]
    return helper.make_function(
        DOMAIN, IF_OP_TYPE, inputs=["X", "T"], outputs=["S"], nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(IF_ATTRIBUTES),
        doc_string="Integrate-and-fire neuron over a time-folded input [T*N, ...].",
    )
