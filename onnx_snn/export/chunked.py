"""The chunked format: T steps run as several calls of a few steps each, with every state
carried from call to call, so that memory holds one chunk instead of all T steps
(docs/chunked-execution.md).

A chunked model is the onnx-snn model with state inputs and outputs added:

- each ``IFNode`` reads its potentials before the chunk (input ``<node>__v``) and
  gives them after it (output ``<node>__v_next``, one step's shape [N, ...]); the op
  takes one value for all neurons too, as the initial state is given;
- each time op (``onnx_snn.ops.time_ops``) becomes the same arithmetic in plain ONNX
  over the chunk's rows with the last row of the previous chunk as state: a running
  sum starts from the sum so far (``<node>__sum``), a difference from the previous
  step's value (``<node>__previous``); the step count c_t continues from the steps
  already run (``time_step__count``).

Every state input has an initializer, its value before step 1, of shape [1, ..., 1] (an
IFNode's ``v_init·θ``, a sum's -0.0, so that -0.0 + x = x, a previous value's 0, a
count's 0), which stands for every value (the IFNode broadcasts it, the time ops expand
it to a row), so the first call needs no state feed. The pairs are listed, in order, in
the metadata under ``CHUNK_STATES``. Calling the model on steps 1..T1, then T1+1..T1+T2,
... feeding each call's state outputs to the next call's state inputs gives, bit for
bit, the outputs of one call on all T steps: each step does the same float32 operations
in the same order (a running sum adds one row at a time, from the previous row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

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
from onnx_snn.io.metadata import ACCUMULATORS, CHUNK_STATES, DIFFERENCES, listed, metadata
from onnx_snn.io.models import ModelLike
from onnx_snn.ops.function_bodies import DOMAIN, IF_OP_TYPE, if_node_function
from onnx_snn.ops.time_ops import (
    RUNNING_MEAN,
    STEP_DIFFERENCE,
    TIME_OPS,
    is_time_op,
)

_TO_END = np.iinfo(np.int64).max


class _ChunkGraph:
    """The graph being rewritten: its fresh names, new constants and state pairs."""

    def __init__(self, graph: onnx.GraphProto, steps: str) -> None:
        self.graph = graph
        self.steps = steps
        self.scope = NameScope(names(graph))
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.states: list[dict[str, str]] = []
        self.count = ""  # the step count c_t of each row, once a counted op needs it
        self._steps_1d = ""  # T as a 1-D shape, once an op needs it
        self.nodes: list[onnx.NodeProto] = []
        self._constants: dict[tuple, str] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer holding ``value`` (one per distinct value)."""
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self._constants:
            self._constants[key] = self.scope.name(f"chunk_{name}")
            self.graph.initializer.append(numpy_helper.from_array(value, self._constants[key]))
        return self._constants[key]

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.scope.name(f"{op.lower()}_chunk")
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def state(self, owner: str, suffix: str, start: float, rank: int) -> tuple[str, str]:
        """A new state of ``owner`` with ``rank`` axes whose value before step 1 is
        ``start`` (as [1, ..., 1]): its input and output names, declared and listed."""
        state_in = self.scope.name(f"{identifier(owner)}__{suffix}")
        state_out = self.scope.name(f"{identifier(owner)}__{suffix}_next")
        self.graph.initializer.append(
            numpy_helper.from_array(np.full((1,) * rank, start, np.float32), state_in))
        for declared, name in [(self.inputs, state_in), (self.outputs, state_out)]:
            declared.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * rank))
        self.states.append({"node": owner, "input": state_in, "output": state_out})
        return state_in, state_out

    def rows(self, x: str) -> str:
        """``x`` [Tc·N, ...] viewed as [Tc, F]: one row per step."""
        shape = self.node("Concat", [self.steps_1d(), self.const("all", np.array([-1]))],
                          axis=0)
        return self.node("Reshape", [x, shape])

    def steps_1d(self) -> str:
        """T as a 1-D shape [Tc] (one node, made at first use)."""
        if not self._steps_1d:
            self._steps_1d = self.node("Reshape", [self.steps, self.const("one", np.array([1]))])
        return self._steps_1d

    def with_first_row(self, first: str, rows: str) -> str:
        """[first expanded to one row; rows]: the previous chunk's last row on top."""
        row_shape = self.node("Concat", [self.const("one", np.array([1])), self.node(
            "Slice", [self.node("Shape", [rows]), self.const("one", np.array([1])),
                      self.const("end", np.array([_TO_END]))])], axis=0)
        return self.node("Concat", [self.node("Expand", [first, row_shape]), rows], axis=0)

    def last_row(self, rows: str, output: str) -> str:
        return self.node("Slice", [rows, self.const("minus_one", np.array([-1])),
                                   self.const("end", np.array([_TO_END]))], output)

    def drop_row(self, rows: str, first: bool) -> str:
        """``rows`` without its first row (``first``) or its last."""
        start, end = (1, _TO_END) if first else (0, -1)
        return self.node("Slice", [rows, self.const("start", np.array([start])),
                                   self.const("end", np.array([end]))])

    def counts(self) -> str:
        """c_t of each row of the chunk, [Tc, 1]: the steps before it plus 1, 2, ..."""
        if not self.count:
            state_in, state_out = self.state("time_step", "count", 0.0, rank=2)
            ones = self.node("ConstantOfShape", [self.node(
                "Concat", [self.steps_1d(), self.const("one", np.array([1]))], axis=0)],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
            summed = self.node("CumSum", [ones, self.const("axis", np.array(0))])
            self.count = self.node("Add", [state_in, summed])
            self.last_row(self.count, state_out)
        return self.count


def _nodes_within(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The graph's nodes and those of its subgraphs (an If's branches, a Loop's body)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _nodes_within(subgraph)


def chunk_refusal(model: onnx.ModelProto) -> str | None:
    """Why ``model`` (an onnx-snn model, time folded) has no chunked form; None if it has."""
    graph = model.graph
    other = custom_nodes(node for node in graph.node
                         if not is_if_node(node) and not is_time_op(node))
    if other:
        return (f"node '{other[0].name}' is {other[0].domain}::{other[0].op_type}; "
                f"chunked runs support {DOMAIN}::{IF_OP_TYPE} neurons only")
    if any(node.op_type in ("Scan", "Loop") for node in _nodes_within(graph)):
        return ("the model has a Scan or Loop (user-defined neurons in the standard "
                "format, or a loop of the ANN's own) with no state inputs, so it cannot run "
                "in chunks of steps: use the onnx-snn format, a smaller T or batch size, or "
                "a larger --memory-limit")
    props = metadata(model)
    legacy = set(listed(props, ACCUMULATORS) or []) | set(listed(props, DIFFERENCES) or [])
    kept = next((node for node in graph.node
                 if node.name in legacy and not is_time_op(node)), None)
    if kept is not None:
        return (f"node '{kept.name}' keeps a sum over time as a {kept.op_type}, as models "
                "converted before the time ops did: convert the model again to run it in "
                "chunks")
    return None


def to_chunked(model: ModelLike) -> onnx.ModelProto:
    """The chunked form of an onnx-snn format model (see the module docstring); a
    chunked model as it is."""
    model, steps = folded_copy(model)
    if CHUNK_STATES in metadata(model):
        return model
    refusal = chunk_refusal(model)
    if refusal is not None:
        raise OnnxSnnError(refusal)
    graph = model.graph
    chunk = _ChunkGraph(graph, steps)
    ranks = declared_ranks(onnx.shape_inference.infer_shapes(model).graph)
    for node in graph.node:
        if is_time_op(node):
            _time_op(node, chunk)
        elif is_if_node(node):
            _neuron(node, chunk, ranks)
        else:
            chunk.nodes.append(node)
    replace_all(graph.node, chunk.nodes)
    graph.input.extend(chunk.inputs)
    graph.output.extend(chunk.outputs)
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    functions = [f for f in model.functions if (f.domain, f.name) != (DOMAIN, IF_OP_TYPE)
                 and not (f.domain == DOMAIN and f.name in TIME_OPS)]
    if any(is_if_node(node) for node in graph.node):
        functions.append(if_node_function(opset, with_state=True))
    replace_all(model.functions, functions)
    drop_unused_domains(model)
    props = metadata(model)
    helper.set_model_props(model, {**props, CHUNK_STATES: json.dumps(chunk.states)})
    return model


def _neuron(node: onnx.NodeProto, chunk: _ChunkGraph, ranks: dict[str, int]) -> None:
    """The IFNode with its potentials as state (its input ``V`` and output ``V_next``;
    the initial one-value state stands for every neuron)."""
    neuron = IFNeuronStep.of(node, "")
    if node.input[0] not in ranks:
        raise OnnxSnnError(f"IFNode '{node.name}': a chunked run needs the rank of its "
                           "input, and the model does not say it")
    state_in, state_out = chunk.state(node.name, "v", float(neuron.v_start),
                                      ranks[node.input[0]] - neuron.broadcast_input)
    stateful = onnx.NodeProto()
    stateful.CopyFrom(node)
    stateful.input.append(state_in)
    stateful.output.append(state_out)
    chunk.nodes.append(stateful)


def _time_op(node: onnx.NodeProto, chunk: _ChunkGraph) -> None:
    """A time op over the chunk's rows, continuing from its state (the arithmetic of
    ``onnx_snn.ops.time_ops.time_op_function``, with the previous row on top)."""
    x, y = node.input[0], node.output[0]
    rows = chunk.rows(x)
    if TIME_OPS[node.op_type]:  # a running sum: sums so far, on top, then row by row
        state_in, state_out = chunk.state(node.name, "sum", -0.0, rank=2)
        summed = chunk.drop_row(chunk.node("CumSum", [chunk.with_first_row(state_in, rows),
                                                      chunk.const("axis", np.array(0))]),
                                first=True)
        chunk.last_row(summed, state_out)
        result = summed
        if node.op_type == RUNNING_MEAN:
            result = chunk.node("Div", [summed, chunk.counts()])
    else:  # a difference: this row minus the previous one (c_t-scaled when counted)
        state_in, state_out = chunk.state(node.name, "previous", 0.0, rank=2)
        now = rows
        if node.op_type == STEP_DIFFERENCE:
            now = chunk.node("Mul", [rows, chunk.counts()])
        previous = chunk.drop_row(chunk.with_first_row(state_in, now), first=False)
        chunk.last_row(now, state_out)
        result = chunk.node("Sub", [now, previous])
    chunk.node("Reshape", [result, chunk.node("Shape", [x])], y)
