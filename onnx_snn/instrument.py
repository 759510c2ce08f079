"""Per-layer activity outputs added to a converted model, counted in onnxruntime.

``add_spike_counts`` gives every neuron layer an extra output
``<layer>__spike_count``: the number of spikes per sample over all T steps,
shape [N]. ``add_rate_outputs`` adds ``<layer>__rate_scaled``: each neuron's
output (rate × scale) averaged over time, shape [N, ...]. Both are reductions
inside the graph, so a run returns a few numbers per layer instead of the
spike trains.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.graph_builder import GraphBuilder
from onnx_snn.temporal import TIMESTEPS

SPIKE_COUNT_SUFFIX = "__spike_count"
RATE_SUFFIX = "__rate_scaled"
#: Model metadata written by the conversion: JSON {neuron node: its output scale s,
#: a number or one per channel}. The scales themselves are folded into later weights.
OUTPUT_SCALES = "onnx_snn.output_scales"


def neuron_nodes(graph: gs.Graph) -> list[gs.Node]:
    """The neuron nodes of a converted graph (those that read the time steps), in order."""
    return [node for node in graph.nodes
            if any(t.name == TIMESTEPS for t in node.inputs) and node.domain]


def _per_step(make: GraphBuilder, tensor: gs.Variable, timesteps: gs.Tensor) -> gs.Variable:
    """``tensor`` [T·N, ...] viewed as [T, N, F] (F: everything else, flattened)."""
    steps = make("Reshape", [timesteps, make.const([1])], np.int64)
    shape = make("Concat", [steps, make.const([-1]), make("Slice", [
        make("Shape", [tensor], np.int64), make.const([1]), make.const([2**62])], np.int64)],
        np.int64, {"axis": 0})
    seq = make("Reshape", [tensor, shape], tensor.dtype)
    return make("Reshape", [seq, make("Concat", [steps, make.const([0, -1])], np.int64,
                                      {"axis": 0})], tensor.dtype)


def add_spike_counts(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with a ``<layer>__spike_count`` output [N] per neuron layer."""
    graph = gs.import_onnx(model)
    timesteps = next(t for t in graph.inputs if t.name == TIMESTEPS)
    for node in neuron_nodes(graph):
        make = GraphBuilder(graph, f"{node.name}__count_")
        per_step = _per_step(make, node.outputs[0], timesteps)
        counts = make.reduce("ReduceSum", per_step, [0, 2], np.float32)
        graph.outputs.append(make("Identity", [counts], np.float32, output=gs.Variable(
            f"{node.name}{SPIKE_COUNT_SUFFIX}", np.float32, ["N"])))
    return _export_like(graph, model)


def add_rate_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with a ``<layer>__rate_scaled`` output per neuron layer: the
    time average of the layer's spikes times its output scale (``OUTPUT_SCALES``), what
    replaced the Relu's output, as [N, F]."""
    graph = gs.import_onnx(model)
    timesteps = next(t for t in graph.inputs if t.name == TIMESTEPS)
    scales = json.loads({p.key: p.value for p in model.metadata_props}[OUTPUT_SCALES])
    for node in neuron_nodes(graph):
        scale = np.asarray(scales[node.name], np.float32)
        make = GraphBuilder(graph, f"{node.name}__rate_")
        rate = make.reduce("ReduceMean", _per_step(make, node.outputs[0], timesteps), [0],
                           np.float32)  # [N, F]
        if scale.ndim:  # per channel: F is C·(the rest)
            channels = make("Reshape", [rate, make.const([0, scale.size, -1])], np.float32)
            scaled = make("Mul", [channels, make.const(scale[:, None], np.float32)], np.float32)
            rate = make("Reshape", [scaled, make.const([0, -1])], np.float32)
        else:
            rate = make("Mul", [rate, make.const(scale, np.float32)], np.float32)
        graph.outputs.append(make("Identity", [rate], np.float32, output=gs.Variable(
            f"{node.name}{RATE_SUFFIX}", np.float32, ["N", None])))
    return _export_like(graph, model)


def _export_like(graph: gs.Graph, model: onnx.ModelProto) -> onnx.ModelProto:
    exported = gs.export_onnx(graph)
    del exported.functions[:]
    exported.functions.extend(model.functions)
    exported.ir_version = model.ir_version
    del exported.opset_import[:]
    exported.opset_import.extend(model.opset_import)
    exported.metadata_props.extend(model.metadata_props)
    return exported
