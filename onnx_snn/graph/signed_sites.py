"""Where signed neurons go: in front of each weighted layer that reads a value that
is neither rectified nor an affine image of the input
(docs/semantics.md, "Time-difference ops" and "Burst and signed neurons").

Each tensor of the ANN is one of three kinds, in graph order:

- ``INPUT``: a graph input, or affine in the inputs (a first Conv, an embedding
  Gather, a position embedding added): it stays analog, computed once;
- ``RECTIFIED``: a rectifier's output (it becomes a neuron's spikes), or values
  that ops with ``keeps_rectified`` (pooling, reshaping, sums, concatenation, a
  product with a non-negative constant) make from rectified values, and maybe
  ``INPUT`` values (an input concatenated to features is read as a first layer
  reads it);
- ``OTHER``: anything else, e.g. a GELU, a LayerNorm, an attention product, or a
  linear bottleneck (a Conv with no activation after it).

A weighted layer (Conv, Gemm, MatMul with a constant weight) whose data input is
``OTHER`` gets a signed neuron in front of it, so that it is driven by spikes:
an ``Identity`` node (the site) is put on that tensor for all its weighted
consumers; calibration measures |x| there and the rewrite turns the site into
Mul(θ/s) -> signed neuron -> Mul(s), like a rectifier.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.graph.activations import carries_values, constant_value, rectifier_cap
from onnx_snn.graph.naming import NameScope
from onnx_snn.graph.registry import WEIGHTED, affine_over_time, facts

INPUT, RECTIFIED, OTHER = "input", "rectified", "other"
#: Ops whose product with a non-negative constant keeps a rectified value rectified.
_SCALINGS = ("Mul", "Div")


def weighted_data_input(node: gs.Node) -> gs.Tensor | None:
    """The data input of a weighted layer with a constant weight (input 1), else None."""
    if node.op not in WEIGHTED or len(node.inputs) < 2 or not node.inputs[0].name:
        return None
    return node.inputs[0] if constant_value(node.inputs[1]) is not None else None


def tensor_kinds(graph: gs.Graph) -> dict[int, str]:
    """The kind of every float variable tensor (by id), from the graph inputs on."""
    kinds = {id(tensor): INPUT for tensor in graph.inputs}
    for node in graph.toposort().nodes:
        inputs = [kinds.get(id(t), INPUT) for t in node.inputs if carries_values(t)]
        kind = _output_kind(node, inputs)
        for tensor in node.outputs:
            kinds[id(tensor)] = kind
    return kinds


def _output_kind(node: gs.Node, inputs: list[str]) -> str:
    if rectifier_cap(node) is not None:
        return RECTIFIED
    keeps = facts(node.op).keeps_rectified or node.op in _SCALINGS and _nonnegative_factor(node)
    if keeps and RECTIFIED in inputs and all(kind in (RECTIFIED, INPUT) for kind in inputs):
        return RECTIFIED
    if all(kind == INPUT for kind in inputs):
        varying = [carries_values(t) for t in node.inputs]
        if weighted_data_input(node) is not None or affine_over_time(node.op, varying):
            return INPUT
    return OTHER


def _nonnegative_factor(node: gs.Node) -> bool:
    factor = constant_value(node.inputs[1]) if len(node.inputs) == 2 else None
    return factor is not None and bool(np.all(factor >= 0)) and \
        (node.op == "Mul" or bool(np.all(factor > 0)))


def insert_signed_sites(graph: gs.Graph, scope: NameScope | None = None) -> list[gs.Node]:
    """Put a site (an ``Identity`` node) in front of the weighted layers that read an
    ``OTHER`` tensor, one per tensor; returns the sites in graph order."""
    kinds = tensor_kinds(graph)
    scope = scope or NameScope.of(graph)
    sites: dict[int, gs.Node] = {}
    for node in list(graph.nodes):
        data = weighted_data_input(node)
        if data is None or kinds.get(id(data)) != OTHER:
            continue
        if id(data) not in sites:
            spikes = gs.Variable(scope.name(f"{data.name}__signed"), data.dtype, data.shape)
            site = gs.Node("Identity", scope.name(f"{data.name}__signed_neuron"),
                           inputs=[data], outputs=[spikes])
            graph.nodes.append(site)
            sites[id(data)] = site
        node.inputs[0] = sites[id(data)].outputs[0]
    graph.toposort()
    return list(sites.values())
