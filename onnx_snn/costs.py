"""Per-sample operation counts of a converted model's layers (SPEC §9).

For each neuron layer: how many neurons it has per sample, the fan-out of one of
its spikes (the synaptic operations it triggers in the weighted layers it feeds:
Conv ``C_out·kH·kW/groups``, Gemm/MatMul ``out_features``), and the MACs of
those layers in the ANN. Weighted layers that no neuron feeds get analog input
and cost MACs in the SNN too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.instrument import neuron_nodes
from onnx_snn.prepare import infer_shapes

WEIGHTED = ("Conv", "Gemm", "MatMul")


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


def _sample_shape(tensor: gs.Tensor) -> list[int]:
    shape = list(tensor.shape or [])[1:]
    if not shape or not all(isinstance(d, int) for d in shape):
        raise ValueError(f"no static per-sample shape for '{tensor.name}': {tensor.shape}")
    return shape


def _weight(node: gs.Node) -> np.ndarray | None:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    return np.asarray(weight.values) if isinstance(weight, gs.Constant) else None


def layer_macs_and_fan_out(node: gs.Node) -> tuple[int, int]:
    """(MACs per sample, operations per input element) of a weighted layer."""
    weight = _weight(node)
    out_shape = _sample_shape(node.outputs[0])
    if weight is None:
        raise ValueError(f"'{node.name}' has no constant weight")
    if node.op == "Conv":
        groups = int(node.attrs.get("group", 1))
        c_out, c_in_per_group, *kernel = weight.shape
        kernel_size = int(np.prod(kernel))
        return (int(np.prod(out_shape)) * c_in_per_group * kernel_size,
                c_out * kernel_size // groups)
    if node.op == "Gemm":
        k, m = weight.shape[::-1] if node.attrs.get("transB", 0) else weight.shape
        return int(k * m), int(m)
    k, m = weight.shape[-2:]  # MatMul: [..., K] x [K, M]
    return int(np.prod(out_shape[:-1], dtype=np.int64)) * int(k * m), int(m)


def model_costs(snn: onnx.ModelProto) -> ModelCosts:
    """Operation counts per sample, from the converted model with shapes inferred for N = 1."""
    concrete = onnx.ModelProto()
    concrete.CopyFrom(snn)
    for value in concrete.graph.input:
        dims = value.type.tensor_type.shape.dim
        for dim in dims[:2]:  # [S, N, ...]: one sample, direct encoding
            dim.dim_value = 1
    del concrete.graph.value_info[:]
    graph = gs.import_onnx(infer_shapes(concrete))
    costs = {node.name: layer_macs_and_fan_out(node) for node in graph.nodes
             if node.op in WEIGHTED and _weight(node) is not None}
    neurons = neuron_nodes(graph)
    reached_by_spikes: set[str] = set()
    layers = []
    for neuron in neurons:
        fed = _weighted_layers_fed(neuron, costs)
        reached_by_spikes.update(fed)
        layers.append(LayerCost(neuron.name, int(np.prod(_sample_shape(neuron.inputs[0]))),
                                sum(costs[name][1] for name in fed),
                                sum(costs[name][0] for name in fed), fed))
    return ModelCosts(layers, sum(macs for macs, _ in costs.values()),
                      sum(macs for name, (macs, _) in costs.items()
                          if name not in reached_by_spikes))


def _weighted_layers_fed(neuron: gs.Node, weighted: dict) -> list[str]:
    """Weighted layers reached from ``neuron`` without passing another neuron or layer."""
    found, seen = [], set()
    frontier = list(neuron.outputs)
    while frontier:
        for consumer in frontier.pop().outputs:
            if id(consumer) in seen:
                continue
            seen.add(id(consumer))
            if consumer.name in weighted:
                found.append(consumer.name)
            elif not consumer.domain:  # stop at the next neuron
                frontier.extend(consumer.outputs)
    return found
