"""ONNX function bodies for neuron ops, and the one for ``IFNode``.

Every neuron op has the signature ``Op(X, T) -> S``: ``X`` is the time-folded
input [T·N, ...], ``T`` the number of steps (int64 scalar), ``S`` the 0/1
spikes of ``X``'s shape. ``scan_neuron_function`` builds such a body from a
*step* written against ``Arithmetic`` (``onnx_snn.ops.dynamics``): it reshapes
``X`` to [T, F] and runs the step in a Scan over T. An ``If`` on the
``hard_reset`` attribute picks the Scan for the reset mode once per call, so
each step does only the arithmetic of its own reset.

The body is a model-local function, so a converted model runs on plain
onnxruntime, in any binding, with nothing registered (SPEC §8).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import onnx
from onnx import TensorProto, helper

from onnx_snn.ops.dynamics import if_step

DOMAIN = "onnx_snn"
DOMAIN_VERSION = 1
IF_OP_TYPE = "IFNode"
#: Attributes of IFNode and their kinds, in the order the function declares them.
IF_ATTRIBUTE_KINDS = {"v_threshold": "float", "v_reset": "float", "v_init": "float",
                      "hard_reset": "int"}
IF_ATTRIBUTES = tuple(IF_ATTRIBUTE_KINDS)
#: The oldest ai.onnx opset the bodies are valid in (GreaterOrEqual, Slice inputs).
MIN_OPSET = 13

#: ``step(ops, v, x, hard_reset) -> (v_new, spikes)``; tensor names in, tensor names out.
Step = Callable[["GraphArithmetic", str, str, bool], "tuple[str, str]"]


class GraphArithmetic:
    """``Arithmetic`` that appends one ONNX node per operation to ``nodes``.

    Values are tensor names. Inside a step, each float attribute of the
    function is available as a tensor of the same name, and ``"one"`` is 1.0.
    """

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


def _attribute_constant(attribute: str, kind: str) -> onnx.NodeProto:
    """A Constant named ``attribute`` whose value is that function attribute."""
    node = helper.make_node("Constant", [], [attribute])
    value_type = onnx.AttributeProto.FLOAT if kind == "float" else onnx.AttributeProto.INT
    node.attribute.append(helper.make_attribute_ref(f"value_{kind}", value_type,
                                                    ref_attr_name=attribute))
    return node


def _scan_branch(step: Step, hard_reset: bool) -> onnx.GraphProto:
    """An If branch: a Scan of ``step`` over the rows of ``seq``, starting from ``v0``."""
    tag = "hard" if hard_reset else "soft"
    ops = GraphArithmetic(prefix=f"{tag}_")
    v_new, spikes = step(ops, f"{tag}_v", f"{tag}_x", hard_reset)
    feature = [None]  # rank only: named dims would be shared by every inlined neuron
    body = helper.make_graph(
        ops.nodes, f"step_{tag}",
        inputs=[helper.make_tensor_value_info(f"{tag}_v", TensorProto.FLOAT, feature),
                helper.make_tensor_value_info(f"{tag}_x", TensorProto.FLOAT, feature)],
        outputs=[helper.make_tensor_value_info(v_new, TensorProto.FLOAT, feature),
                 helper.make_tensor_value_info(spikes, TensorProto.FLOAT, feature)],
    )
    scan = helper.make_node("Scan", ["v0", "seq"], [f"{tag}_v_final", f"{tag}_spikes"],
                            body=body, num_scan_inputs=1)
    return helper.make_graph(
        [scan], f"{tag}_reset", inputs=[],
        outputs=[helper.make_tensor_value_info(f"{tag}_spikes", TensorProto.FLOAT,
                                               [None, None])])


def scan_neuron_function(domain: str, op_type: str, attributes: Mapping[str, str], step: Step,
                         opset: int, doc: str = "") -> onnx.FunctionProto:
    """The function body of a neuron op ``Op(X, T) -> S`` whose dynamics are ``step``.

    ``attributes`` maps attribute names to ``"float"`` or ``"int"``; it must
    contain ``v_threshold`` (float) and ``hard_reset`` (int, picks the reset
    branch), and may contain ``v_init`` (float: the initial potential as a
    fraction of ``v_threshold``; 0 otherwise). Float attributes are tensors of
    the same name inside ``step``.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"neuron functions need ai.onnx opset >= {MIN_OPSET}, got {opset}")
    if attributes.get("hard_reset") != "int" or attributes.get("v_threshold") != "float":
        raise ValueError("a neuron function needs attributes 'v_threshold' (float) and "
                         "'hard_reset' (int)")
    const = helper.make_tensor
    initial = ([helper.make_node("Mul", ["v_init", "v_threshold"], ["v_start"])]
               if attributes.get("v_init") == "float" else
               [helper.make_node("Identity", ["zero"], ["v_start"])])
    nodes = [_attribute_constant(name, kind) for name, kind in attributes.items()] + [
        helper.make_node("Constant", [], ["one"],
                         value=const("one", TensorProto.FLOAT, [], [1.0])),
        helper.make_node("Constant", [], ["zero"],
                         value=const("zero", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["minus_one"],
                         value=const("minus_one", TensorProto.INT64, [1], [-1])),
        helper.make_node("Constant", [], ["shape1"],
                         value=const("shape1", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["end2"],
                         value=const("end2", TensorProto.INT64, [1], [2])),
        helper.make_node("Shape", ["X"], ["x_shape"]),
        helper.make_node("Reshape", ["T", "shape1"], ["t1"]),
        helper.make_node("Concat", ["t1", "minus_one"], ["seq_shape"], axis=0),
        helper.make_node("Reshape", ["X", "seq_shape"], ["seq"]),
        helper.make_node("Shape", ["seq"], ["seq_dims"]),
        helper.make_node("Slice", ["seq_dims", "shape1", "end2"], ["features"]),
        *initial,
        helper.make_node("Expand", ["v_start", "features"], ["v0"]),
        helper.make_node("Cast", ["hard_reset"], ["hard"], to=TensorProto.BOOL),
        helper.make_node("If", ["hard"], ["spikes_seq"],
                         then_branch=_scan_branch(step, hard_reset=True),
                         else_branch=_scan_branch(step, hard_reset=False)),
        helper.make_node("Reshape", ["spikes_seq", "x_shape"], ["S"]),
    ]
    return helper.make_function(
        domain, op_type, inputs=["X", "T"], outputs=["S"], nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)], attributes=list(attributes),
        doc_string=doc)


def _if_function_step(ops: GraphArithmetic, v: str, x: str, hard_reset: bool) -> tuple[str, str]:
    return if_step(ops, v, x, "v_threshold", "v_reset", "one", hard_reset)


def if_node_function(opset: int) -> onnx.FunctionProto:
    """The ``IFNode`` function for a model whose ai.onnx opset is ``opset``."""
    return scan_neuron_function(
        DOMAIN, IF_OP_TYPE, IF_ATTRIBUTE_KINDS, _if_function_step, opset,
        doc="Integrate-and-fire neuron over a time-folded input [T*N, ...].")
