"""ONNX function bodies for neuron ops, and the one for ``IFNode``.

Every neuron op has the signature ``Op(X, T) -> S``: ``X`` is the time-folded
input [T·N, ...], ``T`` the number of steps (int64 scalar), ``S`` the 0/1
spikes of ``X``'s shape. ``scan_neuron_function`` builds such a body from a
*step* written against ``Arithmetic`` (``onnx_snn.ops.dynamics``): it
reshapes ``X`` to [T, F] and runs the step in a Scan over T (``scan_node``). An
``If`` on the ``hard_reset`` attribute picks the Scan for the reset mode once per
call, so each step does only the arithmetic of its own reset. ``scan_nodes``
builds the same for one fixed reset mode, without the function: the plain-ONNX
neurons of the standard format (``onnx_snn.formats``).

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


def _time_major_nodes(x: str, timesteps: str, v_start: str, p: str) -> list[onnx.NodeProto]:
    """``x`` [T·N, ...] as ``{p}seq`` [T, F], its shape as ``{p}x_shape``, and the
    scalar ``v_start`` expanded to ``{p}v0`` [F]."""
    def const(name: str, value: int) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [p + name], value=helper.make_tensor(
            p + name, TensorProto.INT64, [1], [value]))

    return [
        const("minus_one", -1), const("shape1", 1), const("end2", 2),
        helper.make_node("Shape", [x], [f"{p}x_shape"]),
        helper.make_node("Reshape", [timesteps, f"{p}shape1"], [f"{p}t1"]),
        helper.make_node("Concat", [f"{p}t1", f"{p}minus_one"], [f"{p}seq_shape"], axis=0),
        helper.make_node("Reshape", [x, f"{p}seq_shape"], [f"{p}seq"]),
        helper.make_node("Shape", [f"{p}seq"], [f"{p}seq_dims"]),
        helper.make_node("Slice", [f"{p}seq_dims", f"{p}shape1", f"{p}end2"], [f"{p}features"]),
        helper.make_node("Expand", [v_start, f"{p}features"], [f"{p}v0"]),
    ]


def scan_node(step: Step, hard_reset: bool, v0: str, seq: str, spikes: str,
              prefix: str) -> onnx.NodeProto:
    """A Scan of ``step`` (one reset mode) over the rows of ``seq`` [T, F] from ``v0`` [F].

    Its outputs are the final potential ``{prefix}v_final`` and the spikes
    ``spikes`` [T, F]; the body's names start with ``prefix``, and the step's
    constants come from the enclosing scope.
    """
    ops = GraphArithmetic(prefix=prefix)
    v_new, fired = step(ops, f"{prefix}v", f"{prefix}x", hard_reset)
    feature = [None]  # rank only: named dims would be shared by every inlined neuron
    body = helper.make_graph(
        ops.nodes, f"{prefix}step",
        inputs=[helper.make_tensor_value_info(f"{prefix}v", TensorProto.FLOAT, feature),
                helper.make_tensor_value_info(f"{prefix}x", TensorProto.FLOAT, feature)],
        outputs=[helper.make_tensor_value_info(v_new, TensorProto.FLOAT, feature),
                 helper.make_tensor_value_info(fired, TensorProto.FLOAT, feature)])
    return helper.make_node("Scan", [v0, seq], [f"{prefix}v_final", spikes], body=body,
                            num_scan_inputs=1)


def scan_nodes(step: Step, hard_reset: bool, x: str, timesteps: str, v_start: str,
               spikes: str, prefix: str) -> list[onnx.NodeProto]:
    """A neuron of one reset mode as plain nodes: ``x`` [T·N, ...] in, ``spikes`` out.

    ``timesteps`` is the int64 scalar T and ``v_start`` the scalar initial
    potential; every new tensor name starts with ``prefix``.
    """
    return [*_time_major_nodes(x, timesteps, v_start, prefix),
            scan_node(step, hard_reset, f"{prefix}v0", f"{prefix}seq",
                      f"{prefix}spikes_seq", prefix=f"{prefix}step_"),
            helper.make_node("Reshape", [f"{prefix}spikes_seq", f"{prefix}x_shape"], [spikes])]


def _reset_branch(step: Step, hard_reset: bool) -> onnx.GraphProto:
    """An If branch: the Scan for one reset mode on the function's ``seq`` and ``v0``."""
    tag = "hard" if hard_reset else "soft"
    return helper.make_graph(
        [scan_node(step, hard_reset, "v0", "seq", f"{tag}_spikes", prefix=f"{tag}_")],
        f"{tag}_reset", inputs=[],
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
    initial = (helper.make_node("Mul", ["v_init", "v_threshold"], ["v_start"])
               if attributes.get("v_init") == "float" else
               helper.make_node("Constant", [], ["v_start"],
                                value=const("v_start", TensorProto.FLOAT, [], [0.0])))
    nodes = [_attribute_constant(name, kind) for name, kind in attributes.items()] + [
        helper.make_node("Constant", [], ["one"],
                         value=const("one", TensorProto.FLOAT, [], [1.0])),
        initial,
        *_time_major_nodes("X", "T", "v_start", p=""),
        helper.make_node("Cast", ["hard_reset"], ["hard"], to=TensorProto.BOOL),
        helper.make_node("If", ["hard"], ["spikes_seq"],
                         then_branch=_reset_branch(step, hard_reset=True),
                         else_branch=_reset_branch(step, hard_reset=False)),
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
