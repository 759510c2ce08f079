"""Per-layer activity outputs added to a converted model, counted in onnxruntime.

``add_spike_counts`` gives every neuron layer an extra output
``<layer>__spike_count``: the number of spikes per sample over all T steps,
shape [N]; every spike counts, so a burst of k is k and a negative spike is one
too (docs/semantics.md, "Burst and signed neurons"). ``instrument`` can also add
``<layer>__spike_sum``: each neuron's spikes summed over the steps, shape [N, F]
(F: the layer's values per sample).
Both are reductions inside the graph, so a run returns a few numbers per layer
instead of the spike trains.

The neurons come from the model's metadata (``onnx_snn.io.metadata``), so this
works on every format: on a streaming model, which runs one step per call, the
outputs hold that step's counts, and ``StreamingSession.run`` adds them up. The
names of such per-run sums are listed in the metadata under ``TIME_SUMS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.naming import NameScope
from onnx_snn.io.metadata import (
    TIME_SUMS,
    metadata,
    neurons,
    time_summed_outputs,
    timesteps_input,
)

SPIKE_COUNT_SUFFIX = "__spike_count"
SPIKE_SUM_SUFFIX = "__spike_sum"


def _per_step(make: GraphBuilder, tensor: gs.Tensor, steps: gs.Tensor) -> gs.Variable:
    """``tensor`` [steps·N, ...] viewed as [steps, N, F] (F: everything else, flattened)."""
    steps = make("Reshape", [steps, make.const([1])], np.int64)
    sample_dims = make("Slice", [make("Shape", [tensor], np.int64), make.const([1]),
                                 make.const([2**62])], np.int64)
    seq = make("Reshape", [tensor, make("Concat", [steps, make.const([-1]), sample_dims],
                                        np.int64, {"axis": 0})], tensor.dtype)
    return make("Reshape", [seq, make("Concat", [steps, make.const([0, -1])], np.int64,
                                      {"axis": 0})], tensor.dtype)


@dataclass
class Instrumented:
    """A model with activity outputs, and their names by neuron node."""

    model: onnx.ModelProto
    counts: dict[str, str] = field(default_factory=dict)
    sums: dict[str, str] = field(default_factory=dict)


def instrument(model: onnx.ModelProto, counts: bool = True, sums: bool = False) -> Instrumented:
    """A copy of ``model`` with ``<layer>__spike_count`` outputs [N] (``counts``) and
    ``<layer>__spike_sum`` outputs [N, F] (``sums``) per neuron layer; the names are
    made unique against the model's own."""
    props = metadata(model)
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    scope = NameScope.of(graph)
    steps_name = timesteps_input(props)
    steps = tensors[steps_name] if steps_name else gs.Constant(
        scope.name("one_step"), np.array(1, np.int64))
    result = Instrumented(model)
    wanted = [(suffix, reduce, axes, shape, names)
              for suffix, reduce, axes, shape, names, on in [
                  (SPIKE_COUNT_SUFFIX, "ReduceL1", [0, 2], ["N"], result.counts, counts),
                  (SPIKE_SUM_SUFFIX, "ReduceSum", [0], ["N", None], result.sums, sums)] if on]
    for layer in neurons(props):
        make = GraphBuilder(graph, f"{layer.node}__activity_", scope)
        per_step = _per_step(make, tensors[layer.spikes], steps)
        for suffix, reduce, axes, shape, names in wanted:
            output = gs.Variable(scope.name(f"{layer.node}{suffix}"), np.float32, shape)
            graph.outputs.append(make("Identity", [make.reduce(reduce, per_step, axes,
                                                               np.float32)],
                                      np.float32, output=output))
            names[layer.node] = output.name
    result.model = _export_like(graph, model)
    added = [name for *_, names in wanted for name in names.values()]
    onnx.helper.set_model_props(result.model, {
        **props, TIME_SUMS: json.dumps(time_summed_outputs(props) + added)})
    return result


def add_spike_counts(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with a ``<layer>__spike_count`` output [N] per neuron layer."""
    return instrument(model).model


def _export_like(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    """``graph`` exported with ``model``'s functions, IR, opsets and inputs (graph
    surgeon drops an input that has an initializer as its default, as the state
    inputs of a streaming model do)."""
    exported = gs.export_onnx(graph)
    del exported.graph.input[:]
    exported.graph.input.extend(model.graph.input)
    del exported.functions[:]
    exported.functions.extend(model.functions)
    exported.ir_version = model.ir_version
    del exported.opset_import[:]
    exported.opset_import.extend(model.opset_import)
    return exported
