"""Time-difference (TD) ops in the time-folded graph ([T·N, ...])
(docs/semantics.md, "Time-difference ops").

An op f whose inputs vary over time reads their running means x̄_t and emits

    y_t = t·f(x̄_t) − (t−1)·f(x̄_{t−1})     (y_1 = f(x̄_1)),

so the mean of its outputs over steps 1..t is f of the mean inputs, exactly, at
every t: GELU, LayerNorm, Softmax, a product of two spiking tensors (S_t·R_t/t −
S_{t−1}·R_{t−1}/(t−1)), anything. For a positively homogeneous f (MaxPool) the
factors t cancel: y_t = f(S_t) − f(S_{t−1}) on the running sums S_t.

The running sums and means and the differences are the ops of
``onnx_snn.ops.time_ops`` (native kernels, or their CumSum function bodies); the
names of their nodes go to ``accumulators`` and ``differences``, which the
streaming format turns into state.

Chains of TD ops are fused: the running mean of a TD op's output is f(x̄_t), the
value the op computed before its difference, so a TD op that reads another's
output, directly or through affine ops that learn nothing (Add, a scale, a
Reshape, ...), reads that value, with the affine ops replayed on it, instead of
a running mean of the differences. The same in real arithmetic; in float32, one
rounding instead of a CumSum's. The exporters' decomposed GELU, LayerNorm and
SiLU are such chains.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.registry import facts
from onnx_snn.ops.function_bodies import DOMAIN
from onnx_snn.ops.time_ops import (
    DIFFERENCE,
    RUNNING_MEAN,
    RUNNING_SUM,
    STEP_DIFFERENCE,
    TIME_OPS,
)


def front_permutation(layout: tuple[int, int]) -> list[int]:
    """The Transpose permutation that moves the batch axis of ``layout`` to the front."""
    axis, rank = layout
    return [axis, *(k for k in range(rank) if k != axis)]


def back_permutation(layout: tuple[int, int]) -> list[int]:
    """The inverse of ``front_permutation(layout)``."""
    return [int(k) for k in np.argsort(front_permutation(layout))]


class TimeDifference:
    """Builds TD ops with ``make``; ``steps`` is T as a 1-D shape; ``layout(tensor)``
    says where a tensor carries the folded batch when not on axis 0. The names of the
    running-sum and difference nodes it adds go to ``accumulators`` and
    ``differences``, and the tensors the TD ops compute at each step (f of the
    running means) to ``computed``. ``affine`` registers the affine ops that
    chains fuse through."""

    def __init__(self, make: GraphBuilder, steps: gs.Variable, layout=lambda tensor: None
                 ) -> None:
        self.make = make
        self.steps = steps
        self.layout = layout
        self.accumulators: list[str] = []
        self.differences: list[str] = []
        self.computed: list[str] = []
        self._cache: dict[tuple[str, int], gs.Variable] = {}
        #: id of a tensor -> a tensor equal to its running mean, without a RunningMean
        self._means: dict[int, gs.Tensor] = {}
        #: id of an output of an affine op -> the op and which of its inputs vary
        self._affine: dict[int, tuple[gs.Node, list[bool]]] = {}

    def _front(self, tensor: gs.Tensor, layout: tuple[int, int] | None = None) -> gs.Tensor:
        """``tensor`` with its folded batch axis first (its own layout, or ``layout``)."""
        layout = layout or self.layout(tensor)
        if layout is None:
            return tensor
        return self.make("Transpose", [tensor], tensor.dtype,
                         {"perm": front_permutation(layout)})

    def _time_op(self, op_type: str, front: gs.Tensor, like: gs.Tensor,
                 output: gs.Variable | None = None) -> gs.Variable:
        """``op_type`` (``onnx_snn.ops.time_ops``) on ``front``, the batch-first form of a
        tensor laid out like ``like``; the result in ``like``'s layout (into ``output``)."""
        make = self.make
        layout = self.layout(like)
        # The time ops (function bodies and native kernels) compute in float32; a value
        # of another float type (a float64 head) goes through them cast.
        dtype = front.dtype
        wide = dtype is not None and np.dtype(dtype) != np.float32
        if wide:
            front = make("Cast", [front], np.float32, {"to": TensorProto.FLOAT})
        result = make(op_type, [front, self.steps], front.dtype, domain=DOMAIN,
                      output=output if layout is None and not wide else None)
        listed = self.accumulators if TIME_OPS[op_type] else self.differences
        listed.append(result.inputs[0].name)
        if wide:
            result = make("Cast", [result], dtype,
                          {"to": helper.np_dtype_to_tensor_dtype(np.dtype(dtype))},
                          output=output if layout is None else None)
        if layout is None:
            return result
        return make("Transpose", [result], dtype, {"perm": back_permutation(layout)},
                    output=output)

    def _running(self, op_type: str, tensor: gs.Tensor) -> gs.Variable:
        """``op_type`` (a running sum or mean) of ``tensor``, same shape (cached)."""
        key = (op_type, id(tensor))
        if key not in self._cache:
            self._cache[key] = self._time_op(op_type, self._front(tensor), tensor)
        return self._cache[key]

    def running_sum(self, tensor: gs.Tensor) -> gs.Variable:
        """``tensor`` summed over steps 1..t at every step t, same shape."""
        return self._running(RUNNING_SUM, tensor)

    def running_mean(self, tensor: gs.Tensor) -> gs.Tensor:
        """``tensor`` averaged over steps 1..t at every step t, same shape."""
        fused = self._fused_mean(tensor)
        return fused if fused is not None else self._running(RUNNING_MEAN, tensor)

    def affine(self, node: gs.Node, varying: list[bool]) -> None:
        """Note that ``node`` is affine in its inputs flagged in ``varying``; a chain
        may replay it on running means unless it learns weights (replaying a Conv
        or MatMul would repeat its MACs)."""
        if not facts(node.op).learned:
            for output in node.outputs:
                self._affine[id(output)] = (node, varying)

    def _fused_mean(self, tensor: gs.Tensor) -> gs.Tensor | None:
        """The running mean of ``tensor`` from the TD ops upstream: what one computed,
        through replayed affine ops; None when some varying input is not a TD op's."""
        if id(tensor) in self._means or id(tensor) not in self._affine:
            return self._means.get(id(tensor))
        node, varying = self._affine[id(tensor)]
        inputs = [self._fused_mean(t) if flag else t for t, flag in zip(node.inputs, varying)]
        if any(t is None for t in inputs):
            return None
        outputs = [gs.Variable(self.make.name(f"{out.name}_mean"), out.dtype)
                   for out in node.outputs]
        self.make.graph.nodes.append(gs.Node(node.op, self.make.name(f"{node.name}_on_means"),
                                             dict(node.attrs), inputs, outputs,
                                             domain=node.domain))
        for out, mean in zip(node.outputs, outputs):
            self._means[id(out)] = mean
        return self._means[id(tensor)]

    def difference(self, node: gs.Node, index: int = 0, scaled: bool = True) -> None:
        """Make ``node``'s output ``index`` (which keeps its name) the difference of
        t·(what the node computes) between consecutive steps; without the factor t
        when ``scaled`` is False (the node reads running sums)."""
        result = node.outputs[index]
        computed = gs.Variable(self.make.name(f"{node.name}_of_means"), result.dtype)
        node.outputs[index] = computed
        self.computed.append(computed.name)
        if scaled:  # the mean of t·f(x̄_t) − (t−1)·f(x̄_{t−1}) over 1..t is f(x̄_t)
            self._means[id(result)] = computed
        front = self._front(computed, self.layout(result))
        self._time_op(STEP_DIFFERENCE if scaled else DIFFERENCE, front, result, output=result)

    def rewrite(self, node: gs.Node, varying: list[bool]) -> None:
        """Turn ``node`` into its TD form: each input flagged in ``varying`` is read as
        its running mean, and each float output is differenced."""
        for index, flag in enumerate(varying):
            if flag:
                node.inputs[index] = self.running_mean(node.inputs[index])
        for index, output in enumerate(list(node.outputs)):
            if output.name and (output.dtype is None
                                or np.issubdtype(np.dtype(output.dtype), np.floating)):
                self.difference(node, index)
