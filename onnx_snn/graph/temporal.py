"""What an op becomes when its inputs vary over time, decided once for the time
folding (``onnx_snn.snn.time_folding``) and for ``inspect``."""

from __future__ import annotations

from collections.abc import Collection

import onnx_graphsurgeon as gs

from onnx_snn.graph.registry import SHAPE_OPS, affine_over_time

#: Affine in its time-varying inputs: it runs per step as it is, and its mean output
#: over steps is its ANN output at the mean inputs.
LINEAR = "linear"
#: A time-difference op: exact on the means at every t
#: (docs/semantics.md, "Time-difference ops").
TIME_DIFFERENCE = "td"
#: Runs step by step on time-varying values: not exact (``keep_analog``, a MaxPool
#: kept over spikes).
PER_STEP = "per-step"
#: An ArgMax that reads its scores summed over the steps so far.
SUMMED = "summed"
#: The gated MaxPool (``maxpool="gated"``).
GATED = "gated"
#: A shape computation: not data.
SHAPE = "shape"


def behaviour_over_time(node: gs.Node, varying: list[bool], maxpool: str,
                        time_difference: bool, spike_pools: Collection[str] = ()) -> str:
    """How ``node`` runs once the inputs flagged in ``varying`` vary over time, under the
    MaxPool policy ``maxpool``; other nonlinear ops become time-difference ops when
    ``time_difference``, else they run step by step.

    A MaxPool follows the policy ("td", "gated"), or is kept step by step where it
    pools spikes (its name in ``spike_pools``, ``onnx_snn.graph.pooling.spike_pools``);
    one that pools analog values (a time-difference op's output, a potential that
    ``maxpool="before"`` moved it onto) is a time-difference op: the max of per-step
    analog values has no spiking meaning, and would not converge."""
    if node.op in SHAPE_OPS:
        return SHAPE
    if node.op == "ArgMax" and node.attrs.get("axis", 0) != 0:
        return SUMMED
    if node.op == "MaxPool":
        if maxpool in ("td", "gated"):
            return {"td": TIME_DIFFERENCE, "gated": GATED}[maxpool]
        return PER_STEP if node.name in spike_pools else TIME_DIFFERENCE
    if affine_over_time(node.op, varying):
        return LINEAR
    return TIME_DIFFERENCE if time_difference else PER_STEP
