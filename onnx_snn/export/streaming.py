"""The streaming format: one time step per run, for frame-by-frame inference, with
the neurons' membrane potentials (and the running sums and previous steps of label
outputs and temporal MaxPools) as explicit state inputs and outputs, listed in the
metadata (``STREAMING_STATES``);
``onnx_snn.runtime.streaming.StreamingSession`` runs such a model."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.common import (
    IFNeuronStep,
    custom_nodes,
    declared_ranks,
    drop_unused_domains,
    folded_copy,
    identifier,
    is_if_node,
    names,
    replace_all,
)
from onnx_snn.graph.naming import NameScope
from onnx_snn.io.metadata import (
    ACCUMULATORS,
    DIFFERENCES,
    STREAMING_STATES,
    TIMESTEPS_KEY,
    listed,
    metadata,
)
from onnx_snn.io.models import ModelLike
from onnx_snn.ops.dynamics import GraphArithmetic
from onnx_snn.ops.function_bodies import DOMAIN, IF_OP_TYPE
from onnx_snn.ops.time_ops import (
    COUNTED,
    RUNNING_MEAN,
    RUNNING_SUM,
    STEP_DIFFERENCE,
    TIME_OPS,
    is_time_op,
)


def to_streaming(model: ModelLike) -> onnx.ModelProto:
    """A model that runs one time step per call, with the neurons' state as inputs/outputs.

    Inputs are one frame each, [1, N, ...] (the onnx-snn format's S = 1),
    outputs one step, [1, N, ...]; ``timesteps`` is gone (T = 1). Each IFNode
    ``n`` adds input ``<n>__v`` (an initializer holds its default, v_init·θ
    as [1, 1]) and output ``<n>__v_next`` [N, F] (F: the layer's features,
    flattened), both recorded in the metadata under ``STREAMING_STATES``; so are
    the time ops' running sums and previous steps (``onnx_snn.ops.time_ops``; the
    CumSums and Subs listed in ``ACCUMULATORS`` and ``DIFFERENCES`` in models
    converted before them) and the step count, and nodes and initializers no output
    needs are dropped.
    Other neuron ops are an error.
    """
    model, steps = folded_copy(model)
    graph = model.graph
    ranks = declared_ranks(onnx.shape_inference.infer_shapes(model).graph)
    custom = custom_nodes(node for node in graph.node
                          if not is_if_node(node) and not is_time_op(node))
    if custom:
        raise OnnxSnnError(f"node '{custom[0].name}' is {custom[0].domain}::{custom[0].op_type}; "
                           f"the streaming format supports {DOMAIN}::{IF_OP_TYPE} neurons only")
    scope = NameScope(names(graph))
    graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), steps))
    inputs = [value for value in graph.input if value.name != steps]
    outputs = list(graph.output)
    for value, axis in [*((i, "S") for i in inputs), *((o, "T") for o in outputs)]:
        _one_step(value, axis)
    nodes: list[onnx.NodeProto] = []
    states = []
    accumulators = set(listed(metadata(model), ACCUMULATORS) or [])
    differences = set(listed(metadata(model), DIFFERENCES) or [])
    count = ""  # the step number c_t, once a time op needs it
    for node in graph.node:
        if is_time_op(node):
            if node.op_type in COUNTED and not count:
                count, counting = _step_count(scope, graph, inputs, outputs, states)
                nodes += counting
            nodes += _time_op_step(node, count, scope, graph, inputs, outputs, states, ranks)
            continue
        if node.name in accumulators:  # a CumSum, in models converted before the time ops
            nodes += _running_sum(node, scope, graph, inputs, outputs, states, ranks)
            continue
        if node.name in differences:
            nodes += _previous_step(node, scope, graph, inputs, outputs, states, ranks)
            continue
        if not is_if_node(node):
            nodes.append(node)
            continue
        base = identifier(node.name)
        state_in, state_out = scope.name(f"{base}__v"), scope.name(f"{base}__v_next")
        neuron = IFNeuronStep.of(node, scope.prefix(f"{base}__step_"))
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
    nodes = _used(nodes, {value.name for value in outputs})
    read = set().union(*map(_read_names, nodes), (value.name for value in inputs))
    replace_all(graph.node, nodes)
    replace_all(graph.initializer, [init for init in graph.initializer if init.name in read])
    replace_all(graph.input, inputs)
    replace_all(graph.output, outputs)
    del graph.value_info[:]  # T·N rows are N rows now; inference redoes the shapes
    del model.functions[:]
    drop_unused_domains(model)
    props = {e.key: e.value for e in model.metadata_props if e.key != TIMESTEPS_KEY}
    helper.set_model_props(model, {**props, STREAMING_STATES: json.dumps(states)})
    return onnx.shape_inference.infer_shapes(model)


def _state(owner: str, suffix: str, scope: NameScope, graph: onnx.GraphProto,
           inputs: list, outputs: list, states: list, rank: int | None) -> tuple[str, str]:
    """A new state of the node (or tensor) ``owner`` with ``rank`` axes (0 at the start,
    as [1, ..., 1]): its input and output names, declared and listed in ``states``."""
    if rank is None:
        raise OnnxSnnError(f"node '{owner}': the streaming format needs the rank of its "
                           "state, and the model does not say it")
    state_in = scope.name(f"{identifier(owner)}__{suffix}")
    state_out = scope.name(f"{identifier(owner)}__{suffix}_next")
    graph.initializer.append(numpy_helper.from_array(np.zeros((1,) * rank, np.float32),
                                                     state_in))
    inputs.append(helper.make_tensor_value_info(state_in, TensorProto.FLOAT, [None] * rank))
    outputs.append(helper.make_tensor_value_info(state_out, TensorProto.FLOAT, [None] * rank))
    states.append({"node": owner, "input": state_in, "output": state_out})
    return state_in, state_out


def _step_count(scope: NameScope, graph: onnx.GraphProto, inputs: list, outputs: list,
                states: list) -> tuple[str, list[onnx.NodeProto]]:
    """The step number c_t (a state counting from 0, plus one each step): its name, and
    the nodes that compute it."""
    count = scope.name("time_step")
    state_in, state_out = _state(count, "count", scope, graph, inputs, outputs, states, 0)
    one = scope.name("time_step__one")
    graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
    return count, [helper.make_node("Add", [state_in, one], [count]),
                   helper.make_node("Identity", [count], [state_out])]


def _time_op_step(node: onnx.NodeProto, count: str, scope: NameScope, graph: onnx.GraphProto,
                  inputs: list, outputs: list, states: list, ranks: dict[str, int]
                  ) -> list[onnx.NodeProto]:
    """One step of a time op (``onnx_snn.ops.time_ops``), the same arithmetic as its
    function body: a running sum keeps its sum so far as state, a difference the
    previous step's value; ``count`` is the step number c_t; ``ranks`` gives the
    rank of its input."""
    x, y, make = node.input[0], node.output[0], helper.make_node
    if TIME_OPS[node.op_type]:
        state_in, state_out = _state(node.name, "sum", scope, graph, inputs, outputs, states,
                                     ranks.get(x))
        summed = y if node.op_type == RUNNING_SUM else scope.name(f"{y}__sum")
        nodes = [make("Add", [state_in, x], [summed], name=node.name),
                 make("Identity", [summed], [state_out])]
        if node.op_type == RUNNING_MEAN:
            nodes.append(make("Div", [summed, count], [y]))
        return nodes
    state_in, state_out = _state(node.name, "previous", scope, graph, inputs, outputs, states,
                                 ranks.get(x))
    now, nodes = x, []
    if node.op_type == STEP_DIFFERENCE:
        now = scope.name(f"{y}__scaled")
        nodes.append(make("Mul", [x, count], [now]))
    return [*nodes, make("Sub", [now, state_in], [y], name=node.name),
            make("Identity", [now], [state_out])]


def _running_sum(node: onnx.NodeProto, scope: NameScope, graph: onnx.GraphProto,
                 inputs: list, outputs: list, states: list, ranks: dict[str, int]
                 ) -> list[onnx.NodeProto]:
    """One step of a CumSum over time: the sum so far (a state) plus this step's value."""
    state_in, state_out = _state(node.name, "sum", scope, graph, inputs, outputs, states,
                                 ranks.get(node.input[0]))
    return [helper.make_node("Add", [state_in, node.input[0]], [node.output[0]],
                             name=node.name),
            helper.make_node("Identity", [node.output[0]], [state_out])]


def _previous_step(node: onnx.NodeProto, scope: NameScope, graph: onnx.GraphProto,
                   inputs: list, outputs: list, states: list, ranks: dict[str, int]
                   ) -> list[onnx.NodeProto]:
    """One step of a Sub of the previous step: its second input becomes a state whose
    next value is this step's first input."""
    state_in, state_out = _state(node.name, "previous", scope, graph, inputs, outputs, states,
                                 ranks.get(node.input[0]))
    return [helper.make_node("Sub", [node.input[0], state_in], [node.output[0]],
                             name=node.name),
            helper.make_node("Identity", [node.input[0]], [state_out])]


def _used(nodes: list[onnx.NodeProto], wanted: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` (in order) without those whose outputs nothing in ``wanted`` needs."""
    kept = []
    for node in reversed(nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(_read_names(node))
    return kept[::-1]


def _read_names(node: onnx.NodeProto) -> set[str]:
    """The names ``node`` reads: its inputs and those of the nodes of its subgraphs."""
    graphs = [attribute.g for attribute in node.attribute if attribute.HasField("g")]
    graphs += [graph for attribute in node.attribute for graph in attribute.graphs]
    return set(node.input).union(*(_read_names(inner) for graph in graphs
                                   for inner in graph.node))


def _one_step(value: onnx.ValueInfoProto, axis: str) -> None:
    """Declare a leading time axis named ``axis`` (``S`` or ``T``) as 1."""
    dims = value.type.tensor_type.shape.dim
    if dims and dims[0].dim_param == axis:
        dims[0].dim_value = 1
