"""Other forms of a converted model: plain ONNX, and one step at a time.

``convert`` writes the onnx-snn format: neurons are ``IFNode`` ops of the
``onnx_snn`` domain, defined by a model-local function. Two exports rewrite
it, both with the dynamics of ``onnx_snn.ops.dynamics.if_step``, so every
format computes the same spikes bit for bit:

* ``standard``: only ai.onnx ops. Each IFNode becomes the Scan over T of its
  function body, specialised to the node's reset mode (no If). Neuron ops of
  other domains (user-defined neurons) have their local functions inlined.
* ``streaming``: one time step per run, for frame-by-frame inference. T is
  fixed to 1, inputs are one frame [1, N, ...], and each IFNode is one step
  with explicit state: input ``<node>__v`` (its default, an initializer, is
  the initial potential as [1, 1], which broadcasts, so step 0 needs no state
  feed) and output ``<node>__v_next`` [N, F] (the layer's features
  flattened), to feed back at the next step. The pairs are listed, as JSON,
  in the model metadata under ``STREAMING_STATES``; ``StreamingSession``
  (``onnx_snn.streaming``) runs such a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.inliner import inline_local_functions

from onnx_snn.errors import OnnxSnnError
from onnx_snn.model_info import ACCUMULATORS, TIMESTEPS, TIMESTEPS_KEY, metadata
from onnx_snn.modelio import ModelLike, load_model
from onnx_snn.naming import NameScope
from onnx_snn.ops.dynamics import if_step
from onnx_snn.ops.function import DOMAIN, IF_ATTRIBUTES, IF_OP_TYPE, GraphArithmetic, scan_nodes

FORMATS = ("onnx-snn", "standard", "streaming")
#: Metadata key of a streaming model: JSON list of {"node", "input", "output"} states.
STREAMING_STATES = "onnx_snn.streaming_states"
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of ``FORMATS``; a clear error otherwise."""
    if fmt not in FORMATS:
        raise OnnxSnnError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def export_format(model: ModelLike, fmt: str) -> onnx.ModelProto:
    """A converted (onnx-snn format) model in format ``fmt`` (one of ``FORMATS``)."""
    exporters = {"onnx-snn": load_model, "standard": to_standard, "streaming": to_streaming}
    return exporters[check_format(fmt)](model)


@dataclass(frozen=True)
class _IFNeuron:
    """One IFNode's parameters, and the constants its specialised step reads."""

    prefix: str
    theta: np.float32
    v_reset: np.float32
    v_start: np.float32
    hard_reset: bool
    broadcast_input: bool

    @classmethod
    def of(cls, node: onnx.NodeProto, prefix: str) -> _IFNeuron:
        values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        missing = [name for name in IF_ATTRIBUTES if name not in values]
        if missing:
            raise OnnxSnnError(f"IFNode '{node.name}' lacks attribute(s) {', '.join(missing)}; "
                               f"expected {', '.join(IF_ATTRIBUTES)}")
        theta = np.float32(values["v_threshold"])
        return cls(prefix, theta, np.float32(values["v_reset"]),
                   np.float32(values["v_init"]) * theta, bool(values["hard_reset"]),
                   bool(values["broadcast_input"]))

    def constants(self) -> list[TensorProto]:
        """Initializers for the names ``step`` uses (θ; v_reset for hard reset)."""
        values = {"theta": self.theta}
        if self.hard_reset:
            values["v_reset"] = self.v_reset
        return [numpy_helper.from_array(np.asarray(value, np.float32), self.prefix + name)
                for name, value in values.items()]

    def step(self, ops: GraphArithmetic, v: str, x: str, hard_reset: bool) -> tuple[str, str]:
        """``if_step`` on this neuron's constants."""
        p = self.prefix
        return if_step(ops, v, x, f"{p}theta", f"{p}v_reset", hard_reset)


def to_standard(model: ModelLike) -> onnx.ModelProto:
    """The model with only ai.onnx ops (and no functions); same interface and outputs.

    Each IFNode becomes a Scan of ``if_step`` for its own reset mode; other
    neuron ops are replaced by their inlined local functions; any other
    custom-domain op is an error.
    """
    model, _ = _folded_copy(model)
    graph = model.graph
    scope = NameScope(_names(graph))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if not _is_if_node(node):
            nodes.append(node)
            continue
        neuron = _IFNeuron.of(node, scope.prefix(f"{_identifier(node.name)}__if_"))
        v_start = f"{neuron.prefix}v_start"
        graph.initializer.extend([*neuron.constants(),
                                  numpy_helper.from_array(np.asarray(neuron.v_start), v_start)])
        nodes += scan_nodes(neuron.step, neuron.hard_reset, node.input[0], node.input[1],
                            v_start, node.output[0], neuron.prefix, neuron.broadcast_input)
    _replace(graph.node, nodes)
    custom = _custom_nodes(graph.node)
    if custom:
        defined = {(f.domain, f.name) for f in model.functions}
        for node in custom:
            if (node.domain, node.op_type) not in defined:
                raise OnnxSnnError(f"node '{node.name}' is {node.domain}::{node.op_type}, which "
                                   "has no local function; the standard format has only "
                                   "ai.onnx ops")
        model = inline_local_functions(model)
    del model.functions[:]
    _drop_unused_domains(model)
    return onnx.shape_inference.infer_shapes(model)


def to_streaming(model: ModelLike) -> onnx.ModelProto:
    """A model that runs one time step per call, with the neurons' state as inputs/outputs.

    Inputs are one frame each, [1, N, ...] (the onnx-snn format's S = 1),
    outputs one step, [1, N, ...]; ``timesteps`` is gone (T = 1). Each IFNode
    ``n`` adds input ``<n>__v`` (an initializer holds its default, v_init·θ
    as [1, 1]) and output ``<n>__v_next`` [N, F] (F: the layer's features,
    flattened), both recorded in the metadata under ``STREAMING_STATES``.
    Other neuron ops are an error.
    """
    model, steps = _folded_copy(model)
    graph = model.graph
    custom = _custom_nodes(node for node in graph.node if not _is_if_node(node))
    if custom:
        raise OnnxSnnError(f"node '{custom[0].name}' is {custom[0].domain}::{custom[0].op_type}; "
                           f"the streaming format supports {DOMAIN}::{IF_OP_TYPE} neurons only")
    scope = NameScope(_names(graph))
    graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), steps))
    inputs = [value for value in graph.input if value.name != steps]
    outputs = list(graph.output)
    for value, axis in [*((i, "S") for i in inputs), *((o, "T") for o in outputs)]:
        _one_step(value, axis)
    nodes: list[onnx.NodeProto] = []
    states = []
    accumulators = set(json.loads(metadata(model).get(ACCUMULATORS, "[]")))
    for node in graph.node:
        if node.name in accumulators:
            nodes += _running_sum(node, scope, graph, inputs, outputs, states)
            continue
        if not _is_if_node(node):
            nodes.append(node)
            continue
        base = _identifier(node.name)
        state_in, state_out = scope.name(f"{base}__v"), scope.name(f"{base}__v_next")
        neuron = _IFNeuron.of(node, scope.prefix(f"{base}__step_"))
        p = neuron.prefix
        ops = GraphArithmetic(p)
        v_new, fired = neuron.step(ops, state_in, f"{p}x", neuron.hard_reset)
        frame = node.input[0]
        if neuron.broadcast_input:  # [1, N, ...]: drop the step axis
            frame = f"{p}frame"
            graph.initializer.extend([
                numpy_helper.from_array(np.array([1], np.int64), f"{p}from_axis1"),
                numpy_helper.from_array(np.array([np.iinfo(np.int64).max]), f"{p}to_end")])
            nodes += [helper.make_node("Shape", [node.input[0]], [f"{p}in_shape"]),
                      helper.make_node("Slice", [f"{p}in_shape", f"{p}from_axis1", f"{p}to_end"],
                                       [f"{p}frame_shape"]),
                      helper.make_node("Reshape", [node.input[0], f"{p}frame_shape"], [frame])]
        nodes += [helper.make_node("Reshape", [frame, f"{p}rows"], [f"{p}x"]),
                  *ops.nodes,
                  helper.make_node("Shape", [frame], [f"{p}x_shape"]),
                  helper.make_node("Reshape", [fired, f"{p}x_shape"], [node.output[0]]),
                  helper.make_node("Identity", [v_new], [state_out])]
        graph.initializer.extend([
            *neuron.constants(), numpy_helper.from_array(np.array([0, -1], np.int64), f"{p}rows"),
            numpy_helper.from_array(np.full((1, 1), neuron.v_start, np.float32), state_in)])
        inputs.append(helper.make_tensor_value_info(state_in, TensorProto.FLOAT, [None, None]))
        outputs.append(helper.make_tensor_value_info(state_out, TensorProto.FLOAT, [None, None]))
        states.append({"node": node.name, "input": state_in, "output": state_out})
    if not states:
        raise OnnxSnnError("the model has no IFNode neurons: nothing to run step by step")
    _replace(graph.node, nodes)
    _replace(graph.input, inputs)
    _replace(graph.output, outputs)
    del graph.value_info[:]  # T·N rows are N rows now; inference redoes the shapes
    del model.functions[:]
    _drop_unused_domains(model)
    props = {e.key: e.value for e in model.metadata_props if e.key != TIMESTEPS_KEY}
    helper.set_model_props(model, {**props, STREAMING_STATES: json.dumps(states)})
    return onnx.shape_inference.infer_shapes(model)


def _folded_copy(model: ModelLike) -> tuple[onnx.ModelProto, str]:
    """A copy of an onnx-snn format model (one with a T input), and its T input's name."""
    source = load_model(model)
    steps = metadata(source).get(TIMESTEPS_KEY, TIMESTEPS)
    if steps not in [value.name for value in source.graph.input]:
        raise OnnxSnnError(f"not an onnx-snn format model: it has no '{steps}' input")
    copy = onnx.ModelProto()
    copy.CopyFrom(source)
    return copy, steps


def _running_sum(node: onnx.NodeProto, scope: NameScope, graph: onnx.GraphProto,
                 inputs: list, outputs: list, states: list) -> list[onnx.NodeProto]:
    """One step of a CumSum over time: the sum so far (a state, 0 at the start) plus
    this step's value."""
    state_in = scope.name(f"{_identifier(node.name)}__sum")
    state_out = scope.name(f"{_identifier(node.name)}__sum_next")
    graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), state_in))
    inputs.append(helper.make_tensor_value_info(state_in, TensorProto.FLOAT, None))
    outputs.append(helper.make_tensor_value_info(state_out, TensorProto.FLOAT, None))
    states.append({"node": node.name, "input": state_in, "output": state_out})
    return [helper.make_node("Add", [state_in, node.input[0]], [node.output[0]],
                             name=node.name),
            helper.make_node("Identity", [node.output[0]], [state_out])]


def _is_if_node(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == IF_OP_TYPE


def _custom_nodes(nodes: Iterable[onnx.NodeProto]) -> list[onnx.NodeProto]:
    return [node for node in nodes if node.domain not in _STANDARD_DOMAINS]


def _one_step(value: onnx.ValueInfoProto, axis: str) -> None:
    """Declare a leading time axis named ``axis`` (``S`` or ``T``) as 1."""
    dims = value.type.tensor_type.shape.dim
    if dims and dims[0].dim_param == axis:
        dims[0].dim_value = 1


def _replace(field, values: list) -> None:
    """Set a repeated message field to copies of ``values`` (which may be its own items)."""
    copies = []
    for value in values:
        copies.append(type(value)())
        copies[-1].CopyFrom(value)
    del field[:]
    field.extend(copies)


def _drop_unused_domains(model: onnx.ModelProto) -> None:
    """Remove opset imports of custom domains that no node uses any more."""
    used = {node.domain for node in model.graph.node}
    kept = [entry for entry in model.opset_import
            if entry.domain in _STANDARD_DOMAINS or entry.domain in used]
    _replace(model.opset_import, kept)


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name of the graph's top level."""
    names = {value.name for value in [*graph.input, *graph.output, *graph.value_info]}
    names |= {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _identifier(name: str) -> str:
    """``name`` with every character outside [A-Za-z0-9_] replaced by ``_``."""
    return re.sub(r"\W", "_", name, flags=re.ASCII) or "ifnode"
