"""MaxPool over time-varying values, rewritten in the time-folded graph ([T·N, ...]) for
the ``TEMPORAL_POLICIES`` of ``onnx_snn.graph.pooling``.

With S_t = x_1 + … + x_t the input summed over steps 1..t (a CumSum over time):

- ``"td"`` (SPEC §10): y_t = maxpool(S_t) − maxpool(S_{t−1}), maxpool(S_0) = 0, so
  y_1 + … + y_t = maxpool(S_t): the mean output is the max of the mean input at
  every t; on 0/1 spikes the output is 0/1 spikes again;
- ``"gated"`` (Rueckauer et al., "Conversion of continuous-valued deep networks to
  efficient event-driven networks for image classification", Front. Neurosci.
  11:682, 2017): y_t = x_t at each window's argmax of S_t (the first on ties), found
  with MaxPool's Indices output and gathered from x_t.

The pool keeps its attributes (pads, strides, dilations, ceil_mode). No state: the
CumSum and the difference with the previous step (a Sub whose second input is the
step before, zeros at step 1) become state in the streaming format.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.builder import GraphBuilder

#: ``tensor`` [T·N, ...] -> its sum over steps 1..t at every step t, same shape.
Cumulative = Callable[[gs.Tensor], gs.Variable]


def pool_over_time(pool: gs.Node, policy: str, make: GraphBuilder, steps: gs.Variable,
                   cumulative: Cumulative) -> list[str]:
    """Rewrite the temporal MaxPool ``pool`` for ``policy`` ("td" or "gated") in place;
    its output tensor keeps its name. ``steps`` is T as a 1-D shape. Returns the Sub
    nodes that subtract the previous step."""
    if len(pool.outputs) != 1:
        raise OnnxSnnError(f"MaxPool '{pool.name}' also outputs its indices: "
                           f"maxpool={policy!r} cannot rewrite it; use 'keep' or 'before'")
    inputs, pooled = pool.inputs[0], pool.outputs[0]
    pool.inputs[0] = cumulative(inputs)
    pool.attrs.pop("storage_order", None)  # row-major indices
    if policy == "gated":
        pool.outputs[0] = gs.Variable(make.name(f"{pool.name}_max"), pooled.dtype)
        indices = gs.Variable(make.name(f"{pool.name}_indices"), np.int64)
        pool.outputs.append(indices)
        flat = make("Reshape", [inputs, make.const([-1])], inputs.dtype)
        make("Gather", [flat, indices], pooled.dtype, {"axis": 0}, output=pooled)
        return []
    summed_max = gs.Variable(make.name(f"{pool.name}_cumulative"), pooled.dtype)
    pool.outputs[0] = summed_max
    per_step = make("Reshape", [summed_max, make("Concat", [steps, make.const([-1])],
                                                 np.int64, {"axis": 0})], pooled.dtype)
    shifted = make("Pad", [per_step, make.const([1, 0, 0, 0])], pooled.dtype)
    previous = make("Slice", [shifted, make.const([0]), make.const([-1])], pooled.dtype)
    difference = make("Sub", [per_step, previous], pooled.dtype)
    make("Reshape", [difference, make("Shape", [summed_max], np.int64)], pooled.dtype,
         output=pooled)
    return [difference.inputs[0].name]
