"""What to do with MaxPool in a spiking network (SPEC §7).

The max over spike trains over-counts: it is at least the max of the rates.
Policies:

- ``"keep"`` (default): leave MaxPool as it is, with a warning where it follows
  spiking neurons;
- ``"before"``: where a MaxPool directly follows a rectifier, swap the two, so
  the neuron sees the max of its analog inputs. Exact in the ANN, since
  ``relu(maxpool(x)) == maxpool(relu(x))`` (SPEC §7; the over-counting of a max
  over spikes is discussed by Rueckauer et al., "Conversion of continuous-valued
  deep networks to efficient event-driven networks for image classification",
  Frontiers in Neuroscience 11:682, 2017);
- ``"avg"``: replace every MaxPool by an AveragePool over the same windows,
  which is exact on rates but changes the ANN (a warning says so).
"""

from __future__ import annotations

import warnings

import onnx_graphsurgeon as gs

from onnx_snn.activations import rectifier_cap
from onnx_snn.errors import OnnxSnnError

MAXPOOL_POLICIES = ("keep", "before", "avg")
_SHARED_ATTRS = ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad")


def apply_maxpool_policy(graph: gs.Graph, policy: str) -> None:
    """Rewrite the MaxPools of a prepared ANN graph according to ``policy``."""
    if policy not in MAXPOOL_POLICIES:
        raise OnnxSnnError(f"MaxPool policy {policy!r} is not valid: use one of "
                           f"{', '.join(MAXPOOL_POLICIES)}")
    if policy == "before":
        for pool in [n for n in graph.nodes if n.op == "MaxPool"]:
            _move_before_rectifier(pool, graph)
    elif policy == "avg":
        replaced = [_to_average_pool(pool) for pool in graph.nodes if pool.op == "MaxPool"]
        replaced = [name for name in replaced if name]
        if replaced:
            warnings.warn(f"MaxPool {', '.join(map(repr, replaced))} replaced by AveragePool: "
                          "the network no longer computes the original ANN", stacklevel=3)


def _move_before_rectifier(pool: gs.Node, graph: gs.Graph) -> None:
    """rectifier -> MaxPool becomes MaxPool -> rectifier (node names kept)."""
    source = pool.inputs[0]
    rectifier = source.inputs[0] if source.inputs else None
    if rectifier is None or rectifier_cap(rectifier) is None or len(pool.outputs) != 1 \
            or len(source.outputs) != 1 or source in graph.outputs:
        return
    pre_activation, pooled = rectifier.inputs[0], pool.outputs[0]
    pooled_potential = gs.Variable(f"{pool.name}__before_{rectifier.name}", pre_activation.dtype)
    pool.inputs[0] = pre_activation
    pool.outputs[0] = pooled_potential
    rectifier.inputs[0] = pooled_potential
    rectifier.outputs[0] = pooled


def _to_average_pool(pool: gs.Node) -> str | None:
    """Turn ``pool`` into an AveragePool in place; None when it cannot be (dilations,
    an indices output)."""
    dilations = pool.attrs.get("dilations")
    if len(pool.outputs) > 1 or (dilations and any(d != 1 for d in dilations)):
        return None
    pool.op = "AveragePool"
    pool.attrs = {k: v for k, v in pool.attrs.items() if k in _SHARED_ATTRS}
    pool.attrs["count_include_pad"] = 0  # like MaxPool, padding takes no part
    return pool.name
