"""MaxPool over time-varying values, rewritten in the time-folded graph ([T·N, ...]) for
the ``TEMPORAL_POLICIES`` of ``onnx_snn.graph.pooling``.

With S_t = x_1 + … + x_t the input summed over steps 1..t (a CumSum over time):

- ``"td"`` (docs/semantics.md, "Time-difference ops"):
  y_t = maxpool(S_t) − maxpool(S_{t−1}), maxpool(S_0) = 0, so
  y_1 + … + y_t = maxpool(S_t): the mean output is the max of the mean input at
  every t; on 0/1 spikes the output is 0/1 spikes again;
- ``"gated"`` (Rueckauer et al., "Conversion of continuous-valued deep networks to
  efficient event-driven networks for image classification", Front. Neurosci.
  11:682, 2017): y_t = x_t at each window's argmax of S_t (the first on ties), found
  with MaxPool's Indices output and gathered from x_t.

The pool keeps its attributes (pads, strides, dilations, ceil_mode). The running
sums and differences are those of ``onnx_snn.snn.time_difference``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.snn.time_difference import TimeDifference


def pool_over_time(pool: gs.Node, policy: str, td: TimeDifference) -> None:
    """Rewrite the temporal MaxPool ``pool`` for ``policy`` ("td" or "gated") in place,
    with the running sums and differences of ``td``; its output keeps its name."""
    if len(pool.outputs) != 1:
        raise OnnxSnnError(f"MaxPool '{pool.name}' also outputs its indices: "
                           f"maxpool={policy!r} cannot rewrite it; use 'keep' or 'before'")
    inputs, pooled = pool.inputs[0], pool.outputs[0]
    pool.inputs[0] = td.running_sum(inputs)
    pool.attrs.pop("storage_order", None)  # row-major indices
    if policy == "td":
        td.difference(pool, scaled=False)  # max is positively homogeneous: no factor t
        return
    make = td.make
    pool.outputs[0] = gs.Variable(make.name(f"{pool.name}_max"), pooled.dtype)
    indices = gs.Variable(make.name(f"{pool.name}_indices"), np.int64)
    pool.outputs.append(indices)
    flat = make("Reshape", [inputs, make.const([-1])], inputs.dtype)
    make("Gather", [flat, indices], pooled.dtype, {"axis": 0}, output=pooled)
