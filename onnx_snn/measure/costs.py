"""Per-sample operation counts of a converted model's layers
(docs/semantics.md, "Efficiency metrics").

For each neuron layer: how many neurons it has per sample, the fan-out of one of
its spikes (the synaptic operations it triggers in the weighted layers it feeds:
Conv ``C_out·kH·kW/groups``, Gemm/MatMul ``out_features``), and the MACs of
those layers in the ANN. Weighted layers that no neuron feeds get analog input
and cost MACs in the SNN too, as does each value a time-difference op computes
at every step (docs/semantics.md, "Time-difference ops"; the ``TD_OUTPUTS``
metadata, or in models converted before it, the outputs of the ``DIFFERENCES``
nodes).

The shapes are measured, not inferred: the model runs once on one sample for one
step, returning every weighted layer's output and every spike tensor. That
works whatever the format (the neurons are found through the model's metadata)
and wherever shape inference cannot see through a custom op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.graph.activations import constant_value
from onnx_snn.graph.registry import SHAPE_OPS, WEIGHTED, facts
from onnx_snn.io.data import Batch
from onnx_snn.io.metadata import (
    DIFFERENCES,
    TD_OUTPUTS,
    listed,
    metadata,
    neurons,
    timesteps_input,
)
from onnx_snn.runtime.sessions import create_session, run_checked

_SAMPLE = "one sample, one step"


@dataclass
class LayerCost:
    """One neuron layer: neurons per sample, spike fan-out, MACs of the layers it feeds."""

    node: str
    neurons: int
    fan_out: int
    ann_macs: int
    feeds: list[str] = field(default_factory=list)


@dataclass
class ModelCosts:
    layers: list[LayerCost]
    total_macs: int   # every weighted layer of the ANN, per sample
    analog_macs: int  # weighted layers that read analog (non-spiking) input
    td_ops: int = 0   # outputs of time-difference ops, per sample and step (analog)


def _weight(node: gs.Node) -> np.ndarray | None:
    return constant_value(node.inputs[1]) if len(node.inputs) > 1 else None


def model_costs(snn: onnx.ModelProto, sample: Batch) -> ModelCosts:
    """Operation counts per sample of a converted model (any format).

    ``sample``: one batch of inputs by name ([N, ...] each); its first sample
    is run for one step to measure the shapes.
    """
    props = metadata(snn)
    layers_info = neurons(props)
    graph = gs.import_onnx(snn)
    weighted = {node.name: (node, weight) for node in graph.nodes
                if node.op in WEIGHTED and (weight := _weight(node)) is not None}
    spikes = {layer.spikes: layer for layer in layers_info}
    differences = listed(props, TD_OUTPUTS)
    if differences is None:  # a model converted before TD_OUTPUTS was written
        differing = set(listed(props, DIFFERENCES) or [])
        differences = [node.outputs[0].name for node in graph.nodes if node.name in differing]
    measured = _measure(snn, props, sample, [node.outputs[0].name for node, _ in
                                             weighted.values()] + list(spikes) + differences)
    costs = {name: facts(node.op).costs(node, weight, measured[node.outputs[0].name])
             for name, (node, weight) in weighted.items()}
    tensors = graph.tensors()
    reached_by_spikes: set[str] = set()
    layers = []
    for layer in layers_info:
        fed = _weighted_layers_fed(tensors[layer.spikes], set(costs), set(spikes))
        reached_by_spikes.update(fed)
        layers.append(LayerCost(layer.node, int(np.prod(measured[layer.spikes])),
                                sum(costs[name][1] for name in fed),
                                sum(costs[name][0] for name in fed), fed))
    return ModelCosts(layers, sum(macs for macs, _ in costs.values()),
                      sum(macs for name, (macs, _) in costs.items()
                          if name not in reached_by_spikes),
                      sum(int(np.prod(measured[name])) for name in differences))


def _measure(snn: onnx.ModelProto, props: dict[str, str], sample: Batch,
             names: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of tensors ``names``, from a run on one sample for one step."""
    names = list(dict.fromkeys(names))
    probe = onnx.ModelProto()
    probe.CopyFrom(snn)
    existing = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name)
                              for name in names if name not in existing)
    feed = {name: np.asarray(array)[:1][None] for name, array in sample.items()}
    steps = timesteps_input(props)
    if steps:
        feed[steps] = np.array(1, np.int64)
    values = run_checked(create_session(probe), names, feed, _SAMPLE)
    return {name: tuple(value.shape[1:]) for name, value in zip(names, values)}


def _weighted_layers_fed(spikes: gs.Tensor, weighted: set[str], neuron_spikes: set[str]
                         ) -> list[str]:
    """Weighted layers reached from ``spikes`` without passing another neuron, a
    weighted layer or a shape computation."""
    found, seen = [], set()
    frontier = [spikes]
    while frontier:
        for consumer in frontier.pop().outputs:
            if id(consumer) in seen or consumer.op in SHAPE_OPS:
                continue
            seen.add(id(consumer))
            if consumer.name in weighted:
                found.append(consumer.name)
                continue
            frontier.extend(t for t in consumer.outputs if t.name not in neuron_spikes)
    return found
