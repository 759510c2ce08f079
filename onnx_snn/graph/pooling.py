"""What to do with MaxPool in a spiking network
(docs/semantics.md, "Post-training improvements").

The max over spike trains over-counts: it is at least the max of the rates.
Policies:

- ``"keep"`` (default): leave MaxPool as it is, with a warning where it follows
  spiking neurons (a MaxPool of analog values, such as a time-difference op's
  output, is a time-difference op under every policy: ``spike_pools``);
- ``"before"``: where a MaxPool directly follows a rectifier, swap the two, so
  the neuron sees the max of its analog inputs (the pool is then a time-difference
  op, exact on the mean potentials, unless it reads the input). Exact in the ANN, since
  ``relu(maxpool(x)) == maxpool(relu(x))``
  (docs/semantics.md, "Post-training improvements"; the over-counting of a max over
  spikes is discussed by Rueckauer et al., "Conversion of continuous-valued deep
  networks to efficient event-driven networks for image classification", Frontiers
  in Neuroscience 11:682, 2017);
- ``"avg"``: replace every MaxPool by an AveragePool over the same windows,
  which is exact on rates but changes the ANN (a warning says so);
- ``"td"`` and ``"gated"`` (``TEMPORAL_POLICIES``): the ANN is kept as it is;
  in the spiking model, each MaxPool that reads time-varying values pools the
  input summed over the steps so far, S_t (``onnx_snn.snn.temporal_pooling``).
  ``"td"`` emits maxpool(S_t) − maxpool(S_{t−1}), so the mean output is exactly
  the max of the mean input (docs/semantics.md, "Time-difference ops";
  SpikingJelly's ``TDModule`` family);
  ``"gated"`` passes this step's input at the element with the highest
  running rate (Rueckauer et al., 2017, above).
"""

from __future__ import annotations

import warnings

import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.activations import rectifier_cap
from onnx_snn.graph.naming import NameScope
from onnx_snn.graph.patterns import Pattern, PatternPass
from onnx_snn.graph.signed_sites import RECTIFIED, tensor_kinds

#: Policies that change only the spiking model's MaxPools, not the ANN.
TEMPORAL_POLICIES = ("td", "gated")
MAXPOOL_POLICIES = ("keep", "before", "avg", *TEMPORAL_POLICIES)


def check_policy(policy: str) -> str:
    """``policy`` if it is one of ``MAXPOOL_POLICIES``; a clear error otherwise."""
    if policy not in MAXPOOL_POLICIES:
        raise OnnxSnnError(f"MaxPool policy {policy!r} is not valid: use one of "
                           f"{', '.join(MAXPOOL_POLICIES)}")
    return policy


def spike_pools(graph: gs.Graph) -> set[str]:
    """The MaxPools of a prepared ANN graph that pool rectified values, which become
    spikes: "keep" keeps those step by step (``onnx_snn.graph.temporal``)."""
    kinds = tensor_kinds(graph)
    return {node.name for node in graph.nodes if node.op == "MaxPool" and node.inputs
            and kinds.get(id(node.inputs[0])) == RECTIFIED}


def apply_maxpool_policy(graph: gs.Graph, policy: str) -> None:
    """Rewrite the MaxPools of a prepared ANN graph according to ``policy`` (the
    ``TEMPORAL_POLICIES`` leave it as it is)."""
    if check_policy(policy) == "before":
        PatternPass(MaxPoolBeforeRectifier(graph))(graph)
    elif policy == "avg":
        pattern = MaxPoolToAveragePool()
        replaced = [node.name for node in graph.nodes if pattern.match(node)]
        PatternPass(pattern)(graph)
        if replaced:
            warnings.warn(f"MaxPool {', '.join(map(repr, replaced))} replaced by AveragePool: "
                          "the network no longer computes the original ANN", stacklevel=3)


class MaxPoolBeforeRectifier(Pattern):
    """rectifier -> MaxPool becomes MaxPool -> rectifier, node names kept: a two-node
    pattern matched at the MaxPool. The rectifier's output must feed the MaxPool
    alone."""

    def __init__(self, graph: gs.Graph) -> None:
        self.outputs = {id(tensor) for tensor in graph.outputs}
        self.scope = NameScope.of(graph)

    def match(self, pool: gs.Node) -> list[gs.Node] | bool:
        source = pool.inputs[0] if pool.op == "MaxPool" and pool.inputs else None
        rectifier = source.inputs[0] if source is not None and source.inputs else None
        if rectifier is None or rectifier_cap(rectifier) is None or len(pool.outputs) != 1 \
                or len(source.outputs) != 1 or id(source) in self.outputs:
            return False
        return [pool, rectifier]

    def replace(self, pool: gs.Node, graph: gs.Graph) -> list[gs.Node]:
        rectifier = pool.inputs[0].inputs[0]
        pre_activation, pooled = rectifier.inputs[0], pool.outputs[0]
        pooled_potential = gs.Variable(self.scope.name(f"{pool.name}__before_{rectifier.name}"),
                                       pre_activation.dtype, pooled.shape)  # same shape
        return [gs.Node("MaxPool", pool.name, attrs=dict(pool.attrs),
                        inputs=[pre_activation], outputs=[pooled_potential]),
                gs.Node(rectifier.op, rectifier.name, attrs=dict(rectifier.attrs),
                        inputs=[pooled_potential, *rectifier.inputs[1:]], outputs=[pooled])]


class MaxPoolToAveragePool(Pattern):
    """Replace a MaxPool by an AveragePool over the same windows (node name kept).

    Padding is left out of each average (``count_include_pad=0``), just as the
    max ignores it. MaxPools with dilation or an indices output are kept.
    """

    COPIED = ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad")

    def match(self, node: gs.Node) -> bool:
        dilations = node.attrs.get("dilations")
        return (node.op == "MaxPool" and len(node.outputs) == 1
                and (dilations is None or all(d == 1 for d in dilations)))

    def replace(self, node: gs.Node, graph: gs.Graph) -> list[gs.Node]:
        attrs = {key: node.attrs[key] for key in self.COPIED if key in node.attrs}
        attrs["count_include_pad"] = 0
        return [gs.Node("AveragePool", node.name, attrs=attrs, inputs=[node.inputs[0]],
                        outputs=list(node.outputs))]
