"""ONNX function bodies for neuron ops, and the one for ``IFNode``.

Every neuron op has the signature ``Op(X, T) -> S``: ``X`` is the time-folded
input [T·N, ...] (or [S, N, ...] with a ``broadcast_input`` attribute set), ``T``
the number of steps (int64 scalar), ``S`` the spikes [T·N, ...] (0/1; spike counts
for burst and signed neurons).
``scan_neuron_function`` builds such a body from a *step* written against
``Arithmetic`` (``onnx_snn.ops.dynamics``): it reshapes ``X`` to [T, F] and runs
the step in a Scan over T (``scan_node``). An ``If`` on the ``hard_reset``
attribute picks the Scan for the reset mode once per call, so each step does only
the arithmetic of its own reset; IFNode's burst and signed dynamics (its
``max_spikes`` and ``signed`` attributes) are picked the same way. ``scan_nodes``
builds the same for one fixed reset mode, without the function: the plain-ONNX
neurons of the standard format (``onnx_snn.export.formats``).
With ``with_state`` the body is ``Op(X, T, V) -> (S, V_next)`` instead: the
potentials before the first step and after the last, so that a long run can go
in chunks (a model carries one function per op type, so it is one or the other).

The body is a model-local function, so a converted model runs on plain
onnxruntime, in any binding, with nothing registered (docs/semantics.md, "Runtime facts").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnx_snn.graph.registry import MIN_OPSET  # the bodies need GreaterOrEqual, Slice inputs
from onnx_snn.ops.dynamics import GraphArithmetic, if_step

DOMAIN = "onnx_snn"
DOMAIN_VERSION = 1
IF_OP_TYPE = "IFNode"
#: Attributes of IFNode and their kinds, in the order the function declares them.
#: ``broadcast_input``: 0 when X is [T·N, ...], one slice per step; 1 when X is
#: [S, N, ...] with S = 1 (direct encoding: the input is the same at every step,
#: and is not copied T times) or S = T. The spikes are [T·N, ...] either way.
#: ``max_spikes``: the most spikes a step, B (1: the plain IF neuron; more: a burst
#: neuron); ``signed``: 1 when the neuron also fires negative spikes, down to -B
#: (docs/semantics.md, "Burst and signed neurons"). Models converted before these
#: existed lack them: they mean 1 and 0.
IF_ATTRIBUTE_KINDS = {"v_threshold": "float", "v_reset": "float", "v_init": "float",
                      "hard_reset": "int", "broadcast_input": "int", "max_spikes": "int",
                      "signed": "int"}
#: The value an IFNode attribute has where a node lacks it.
IF_ATTRIBUTE_DEFAULTS = {"max_spikes": 1, "signed": 0}
IF_ATTRIBUTES = tuple(IF_ATTRIBUTE_KINDS)

#: ``step(ops, v, x, hard_reset) -> (v_new, spikes)``; tensor names in, tensor names out.
Step = Callable[["GraphArithmetic", str, str, bool], "tuple[str, str]"]


def _attribute_constant(attribute: str, kind: str) -> onnx.NodeProto:
    """A Constant named ``attribute`` whose value is that function attribute."""
    node = helper.make_node("Constant", [], [attribute])
    value_type = onnx.AttributeProto.FLOAT if kind == "float" else onnx.AttributeProto.INT
    node.attribute.append(helper.make_attribute_ref(f"value_{kind}", value_type,
                                                    ref_attr_name=attribute))
    return node


def _int_constants(p: str) -> list[onnx.NodeProto]:
    """1-D int64 constants ``{p}i_zero``, ``{p}i_one``, ``{p}i_two``, ``{p}i_minus_one``
    and ``{p}i_end``."""
    values = {"zero": 0, "one": 1, "two": 2, "minus_one": -1, "end": np.iinfo(np.int64).max}
    return [helper.make_node("Constant", [], [f"{p}i_{name}"], value=helper.make_tensor(
        f"{p}i_{name}", TensorProto.INT64, [1], [value])) for name, value in values.items()]


def _sequence_nodes(x: str, c: str, p: str, broadcast: bool,
                    step_shape: bool = False) -> list[onnx.NodeProto]:
    """``x`` as ``{p}seq`` [T, F], and the spikes' shape as ``{p}out_shape``.

    ``x`` is [T·N, ...], or with ``broadcast`` [S, N, ...] where S = 1 (shown
    at every step) or S = T; the spikes are [T·N, ...] either way. Reads
    ``_int_constants(c)``, ``{c}t1`` (T as [1]) and ``{c}x_shape`` (x's shape).
    With ``step_shape`` also one step's shape [N, ...] as ``{p}step_shape``: x's
    shape with its first dimension divided by T, or without it (``broadcast``).
    """
    make = helper.make_node
    rest = make("Slice", [f"{c}x_shape", f"{c}i_one", f"{c}i_end"], [f"{p}x_rest"])
    if not broadcast:
        step = [make("Slice", [f"{c}x_shape", f"{c}i_zero", f"{c}i_one"], [f"{p}x_rows"]),
                make("Div", [f"{p}x_rows", f"{c}t1"], [f"{p}step_rows"]),
                rest,
                make("Concat", [f"{p}step_rows", f"{p}x_rest"], [f"{p}step_shape"], axis=0)]
        return [make("Concat", [f"{c}t1", f"{c}i_minus_one"], [f"{p}seq_shape"], axis=0),
                make("Reshape", [x, f"{p}seq_shape"], [f"{p}seq"]),
                make("Identity", [f"{c}x_shape"], [f"{p}out_shape"]),
                *(step if step_shape else [])]
    step = [rest, make("Identity", [f"{p}x_rest"], [f"{p}step_shape"])]
    return [make("Slice", [f"{c}x_shape", f"{c}i_zero", f"{c}i_one"], [f"{p}s1"]),
            make("Concat", [f"{p}s1", f"{c}i_minus_one"], [f"{p}rows_shape"], axis=0),
            make("Reshape", [x, f"{p}rows_shape"], [f"{p}rows"]),
            make("Concat", [f"{c}t1", f"{c}i_one"], [f"{p}tile_shape"], axis=0),
            make("Expand", [f"{p}rows", f"{p}tile_shape"], [f"{p}seq"]),
            make("Slice", [f"{c}x_shape", f"{c}i_two", f"{c}i_end"], [f"{p}sample_dims"]),
            make("Concat", [f"{c}i_minus_one", f"{p}sample_dims"], [f"{p}out_shape"], axis=0),
            *(step if step_shape else [])]


def _time_major_nodes(x: str, timesteps: str, p: str, broadcast: bool | str,
                      step_shape: bool = False) -> list[onnx.NodeProto]:
    """``x`` as ``{p}seq`` [T, F], the spikes' shape ``{p}out_shape``, and the
    features per step F as ``{p}features`` [1]; with ``step_shape`` also one step's
    shape [N, ...] as ``{p}step_shape`` (``_sequence_nodes``).

    ``broadcast`` is fixed (a bool), or the name of a bool tensor that an If
    reads at run time (the function's ``broadcast_input`` attribute).
    """
    make = helper.make_node
    shapes = ["out_shape", *(["step_shape"] if step_shape else [])]
    if isinstance(broadcast, bool):
        sequence = _sequence_nodes(x, p, p, broadcast, step_shape)
    else:
        def branch(flag: bool) -> onnx.GraphProto:
            tag = f"{p}{'bcast' if flag else 'steps'}_"
            return helper.make_graph(
                _sequence_nodes(x, p, tag, flag, step_shape), tag + "sequence", inputs=[],
                outputs=[helper.make_tensor_value_info(f"{tag}seq", TensorProto.FLOAT,
                                                       [None, None]),
                         *(helper.make_tensor_value_info(f"{tag}{name}", TensorProto.INT64,
                                                         [None]) for name in shapes)])
        sequence = [make("If", [broadcast], [f"{p}seq", *(f"{p}{name}" for name in shapes)],
                         then_branch=branch(True), else_branch=branch(False))]
    return [
        *_int_constants(p),
        make("Shape", [x], [f"{p}x_shape"]),
        make("Reshape", [timesteps, f"{p}i_one"], [f"{p}t1"]),
        *sequence,
        make("Shape", [f"{p}seq"], [f"{p}seq_dims"]),
        make("Slice", [f"{p}seq_dims", f"{p}i_one", f"{p}i_two"], [f"{p}features"]),
    ]


def _uniform_start(v_start: str, p: str) -> onnx.NodeProto:
    """The scalar ``v_start`` expanded to ``{p}v0`` [F] (after ``_time_major_nodes``)."""
    return helper.make_node("Expand", [v_start, f"{p}features"], [f"{p}v0"])


def _state_start(v: str, p: str) -> list[onnx.NodeProto]:
    """The potentials ``v`` as ``{p}v0`` [F] (after ``_time_major_nodes``): ``v`` holds
    one per feature of a step (e.g. [N, ...]), or one value for every feature (e.g.
    [1, 1]); ``{p}v_one`` [1] tells which (true: one value).

    ``v`` is reshaped to [F], or [1] when it holds one value, then expanded to [F]
    (a copy where it already is). The Reshape fails unless ``v`` holds F values or
    one; it is named for the op (after ``p``), so that onnxruntime's error names it."""
    make = helper.make_node
    return [make("Size", [v], [f"{p}v_count"]),
            make("Equal", [f"{p}v_count", f"{p}i_one"], [f"{p}v_one"]),
            make("Where", [f"{p}v_one", f"{p}i_one", f"{p}features"], [f"{p}v_flat_shape"]),
            make("Reshape", [v, f"{p}v_flat_shape"], [f"{p}v_flat"],
                 name=f"{p}{IF_OP_TYPE}_V_must_hold_one_value_per_feature_or_one"),
            make("Expand", [f"{p}v_flat", f"{p}features"], [f"{p}v0"])]


def _state_end(v: str, v_final: str, v_next: str, p: str,
               same_rank: bool = False) -> list[onnx.NodeProto]:
    """The potentials ``v_final`` [F] as ``v_next``, in the shape of ``v`` (the state input,
    read by ``_state_start``), or one step's shape ``{p}step_shape`` where ``v`` holds one
    value for more than one feature (``{p}v_one``). Where a step has one feature, a
    one-value ``v`` holds one per feature too, and ``v_next`` takes its shape.
    ``same_rank``: ``v`` has a step's rank, so a Where picks the shape instead of an If."""
    make = helper.make_node

    def shape_branch(name: str, node: onnx.NodeProto) -> onnx.GraphProto:
        return helper.make_graph([node], name, inputs=[], outputs=[
            helper.make_tensor_value_info(node.output[0], TensorProto.INT64, [None])])

    pick = make("Where", [f"{p}v_spread", f"{p}step_shape", f"{p}v_shape"],
                [f"{p}v_next_shape"]) if same_rank else make(
        "If", [f"{p}v_spread"], [f"{p}v_next_shape"],
        then_branch=shape_branch(f"{p}step_shaped", make(
            "Identity", [f"{p}step_shape"], [f"{p}v_step_shape"])),
        else_branch=shape_branch(f"{p}v_shaped", make("Shape", [v], [f"{p}v_shape"])))
    return [make("Equal", [f"{p}features", f"{p}i_one"], [f"{p}one_feature"]),
            make("Not", [f"{p}one_feature"], [f"{p}many_features"]),
            make("And", [f"{p}v_one", f"{p}many_features"], [f"{p}v_spread"]),
            *([make("Shape", [v], [f"{p}v_shape"])] if same_rank else []),
            pick,
            make("Reshape", [v_final, f"{p}v_next_shape"], [v_next])]


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
               spikes: str, prefix: str, broadcast: bool = False,
               v_next: str | None = None) -> list[onnx.NodeProto]:
    """A neuron of one reset mode as plain nodes: ``x`` in, ``spikes`` [T·N, ...] out.

    ``x`` is [T·N, ...], or with ``broadcast`` [S, N, ...] (S = 1 or T);
    ``timesteps`` is the int64 scalar T and ``v_start`` the scalar initial
    potential; every new tensor name starts with ``prefix``. With ``v_next``,
    ``v_start`` is the potentials before the first step (one per feature of a step,
    or one value: ``_state_start``, in a step's rank) and ``v_next`` names them after
    the last step.
    """
    stateful = v_next is not None
    nodes = [*_time_major_nodes(x, timesteps, prefix, broadcast, step_shape=stateful),
             *(_state_start(v_start, prefix) if stateful else [_uniform_start(v_start, prefix)]),
             scan_node(step, hard_reset, f"{prefix}v0", f"{prefix}seq",
                       f"{prefix}spikes_seq", prefix=f"{prefix}step_"),
             helper.make_node("Reshape", [f"{prefix}spikes_seq", f"{prefix}out_shape"], [spikes])]
    if stateful:
        nodes += _state_end(v_start, f"{prefix}step_v_final", v_next, prefix, same_rank=True)
    return nodes


def _branch_outputs(names: Sequence[str]) -> list[onnx.ValueInfoProto]:
    """An If branch's outputs: the spikes [T, F], then the final potential [F] if any."""
    ranks = ([None, None], [None])
    return [helper.make_tensor_value_info(name, TensorProto.FLOAT, rank)
            for name, rank in zip(names, ranks)]


def _reset_branch(step: Step, hard_reset: bool, prefix: str,
                  with_state: bool) -> onnx.GraphProto:
    """An If branch: the Scan for one reset mode on the function's ``seq`` and ``v0``;
    it returns the spikes, and with ``with_state`` the final potential."""
    tag = f"{prefix}{'hard' if hard_reset else 'soft'}"
    scan = scan_node(step, hard_reset, "v0", "seq", f"{tag}_spikes", prefix=f"{tag}_")
    v_final, spikes = scan.output
    return helper.make_graph([scan], f"{tag}_reset", inputs=[],
                             outputs=_branch_outputs([spikes, v_final] if with_state else [spikes]))


def _reset_switch(step: Step, outputs: Sequence[str], prefix: str = "") -> onnx.NodeProto:
    """An If on ``hard`` that runs the Scan of ``step`` for the function's reset mode;
    ``outputs`` names the spikes, then the final potential if there is a second name."""
    with_state = len(outputs) > 1
    return helper.make_node("If", ["hard"], list(outputs),
                            then_branch=_reset_branch(step, True, prefix, with_state),
                            else_branch=_reset_branch(step, False, prefix, with_state))


def _as_branch(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    """A graph (an If branch) of the ``_reset_switch`` ``node`` alone, returning its outputs."""
    return helper.make_graph([node], name, inputs=[], outputs=_branch_outputs(node.output))


@dataclass(frozen=True)
class Variant:
    """Other dynamics inside one neuron function: where the bool scalar ``condition``
    holds, the function runs ``step`` instead of its default step. ``nodes`` compute
    ``condition``, and any tensors ``step`` reads, from the attribute tensors."""

    nodes: Sequence[onnx.NodeProto]
    condition: str
    step: Step


def scan_neuron_function(domain: str, op_type: str, attributes: Mapping[str, str], step: Step,
                         opset: int, doc: str = "", variant: Variant | None = None,
                         with_state: bool = False) -> onnx.FunctionProto:
    """The function body of a neuron op ``Op(X, T) -> S`` whose dynamics are ``step``.

    ``attributes`` maps attribute names to ``"float"`` or ``"int"``; it must
    contain ``v_threshold`` (float) and ``hard_reset`` (int, picks the reset
    branch), and may contain ``v_init`` (float: the initial potential as a
    fraction of ``v_threshold``; 0 otherwise) and ``broadcast_input`` (int: 1
    when ``X`` is [S, N, ...] with S = 1, the same input at every step, or
    S = T; see ``IF_ATTRIBUTE_KINDS``). Every attribute is a tensor of the same
    name inside ``step`` (float32 or int64 scalar). A ``variant`` adds a second
    step, picked once per call like the reset mode.

    With ``with_state`` the op is ``Op(X, T, V) -> (S, V_next)``: the potentials
    start at ``V`` (the Scan's initial state, so ``v_init`` goes unused) and end as
    ``V_next``, so a run continues across calls. ``V`` holds one potential per
    feature of a step (e.g. [N, ...]; ``V_next`` then takes ``V``'s shape), or one
    value, the start of every potential (e.g. [1, 1]; ``V_next`` is then one step's
    shape [N, ...], unless a step has one feature: ``V``'s shape). A function cannot
    test whether an optional input is there, so this is a second function, in which
    ``V`` is required.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"neuron functions need ai.onnx opset >= {MIN_OPSET}, got {opset}")
    if attributes.get("hard_reset") != "int" or attributes.get("v_threshold") != "float":
        raise ValueError("a neuron function needs attributes 'v_threshold' (float) and "
                         "'hard_reset' (int)")
    const = helper.make_tensor
    broadcast = ([helper.make_node("Cast", ["broadcast_input"], ["broadcast"], to=TensorProto.BOOL)]
                 if attributes.get("broadcast_input") == "int" else [])
    if with_state:
        initial, start = [], _state_start("V", p="")
    else:
        initial = [helper.make_node("Mul", ["v_init", "v_threshold"], ["v_start"])
                   if attributes.get("v_init") == "float" else
                   helper.make_node("Constant", [], ["v_start"],
                                    value=const("v_start", TensorProto.FLOAT, [], [0.0]))]
        start = [_uniform_start("v_start", p="")]
    nodes = [_attribute_constant(name, kind) for name, kind in attributes.items()] + [
        *initial,
        *broadcast,
        *_time_major_nodes("X", "T", p="", broadcast="broadcast" if broadcast else False,
                           step_shape=with_state),
        *start,
        helper.make_node("Cast", ["hard_reset"], ["hard"], to=TensorProto.BOOL),
    ]
    state = ["v_final"] if with_state else []

    def outputs(tag: str) -> list[str]:
        """The outputs of a ``_reset_switch`` nested in the variant's If."""
        return [f"{tag}_spikes", *(f"{tag}_{name}" for name in state)]

    if variant is None:
        nodes.append(_reset_switch(step, ["spikes_seq", *state]))
    else:
        nodes += [*variant.nodes, helper.make_node(
            "If", [variant.condition], ["spikes_seq", *state],
            then_branch=_as_branch(_reset_switch(variant.step, outputs("variant"), "variant_"),
                                   "variant"),
            else_branch=_as_branch(_reset_switch(step, outputs("default")), "default"))]
    nodes.append(helper.make_node("Reshape", ["spikes_seq", "out_shape"], ["S"]))
    if with_state:
        nodes += _state_end("V", "v_final", "V_next", p="")
    return helper.make_function(
        domain, op_type, inputs=["X", "T", *(["V"] if with_state else [])],
        outputs=["S", *(["V_next"] if with_state else [])], nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)], attributes=list(attributes),
        doc_string=doc)


def _if_function_step(ops: GraphArithmetic, v: str, x: str, hard_reset: bool) -> tuple[str, str]:
    return if_step(ops, v, x, "v_threshold", "v_reset", hard_reset)


def _burst_function_step(ops: GraphArithmetic, v: str, x: str,
                         hard_reset: bool) -> tuple[str, str]:
    return if_step(ops, v, x, "v_threshold", "v_reset", hard_reset,
                   spike_range=("spikes_low", "spikes_high"))


def _burst_variant() -> Variant:
    """The burst / signed dynamics, where ``max_spikes > 1`` or ``signed``: spikes
    from ``spikes_low`` (-max_spikes if signed, else 0) to ``spikes_high`` (max_spikes)."""
    make, const = helper.make_node, helper.make_tensor
    return Variant(nodes=[
        make("Cast", ["max_spikes"], ["spikes_high"], to=TensorProto.FLOAT),
        make("Cast", ["signed"], ["is_signed"], to=TensorProto.BOOL),
        make("Neg", ["spikes_high"], ["spikes_high_negated"]),
        make("Constant", [], ["no_spikes"], value=const("no_spikes", TensorProto.FLOAT, [], [0])),
        make("Where", ["is_signed", "spikes_high_negated", "no_spikes"], ["spikes_low"]),
        make("Constant", [], ["one_spike"], value=const("one_spike", TensorProto.INT64, [], [1])),
        make("Greater", ["max_spikes", "one_spike"], ["bursts"]),
        make("Or", ["bursts", "is_signed"], ["quantized"]),
    ], condition="quantized", step=_burst_function_step)


def if_node_function(opset: int, with_state: bool = False) -> onnx.FunctionProto:
    """The ``IFNode`` function for a model whose ai.onnx opset is ``opset``:
    ``IFNode(X, T) -> S``, or with ``with_state`` ``IFNode(X, T, V) -> (S, V_next)``
    (the potentials before the first step and after the last; ``scan_neuron_function``)."""
    return scan_neuron_function(
        DOMAIN, IF_OP_TYPE, IF_ATTRIBUTE_KINDS, _if_function_step, opset,
        doc="Integrate-and-fire neuron over a time-folded input [T*N, ...].",
        variant=_burst_variant(), with_state=with_state)
