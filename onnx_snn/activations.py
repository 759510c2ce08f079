"""Which activations can become spiking neurons, and which cannot."""

from __future__ import annotations

import warnings

import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError

#: Activations with no rate-coded IF equivalent.
UNCONVERTIBLE = frozenset({
    "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Erf", "Clip", "Swish",
    "Softmax", "LogSoftmax",
})
#: Allowed when they produce a graph output: applied per time step.
OUTPUT_ONLY = frozenset({"Softmax", "LogSoftmax"})


def unconvertible_activations(graph: gs.Graph) -> list[gs.Node]:
    """Nodes that would stay analog inside the spiking net, in graph order."""
    found = []
    for node in graph.nodes:
        if node.op not in UNCONVERTIBLE:
            continue
        if node.op in OUTPUT_ONLY and all(out in graph.outputs for out in node.outputs):
            continue
        found.append(node)
    return found


def check_activations(graph: gs.Graph, keep_analog: bool) -> None:
    """Refuse unconvertible activations, naming them all, unless ``keep_analog``."""
    nodes = unconvertible_activations(graph)
    if not nodes:
        return
    listing = ", ".join(f"{node.op} '{node.name}'" for node in nodes)
    if not keep_analog:
        raise OnnxSnnError(f"cannot convert {listing}: only Relu becomes a spiking neuron; "
                           "keep them analog with keep_analog=True (--keep-analog)")
    warnings.warn(f"keeping {listing} analog: their outputs are not spikes", stacklevel=3)
