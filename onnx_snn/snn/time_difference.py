"""Time-difference (TD) ops in the time-folded graph ([T·N, ...]), SPEC §10.

An op f whose inputs vary over time reads their running means x̄_t (a CumSum
over time divided by t) and emits

    y_t = t·f(x̄_t) − (t−1)·f(x̄_{t−1})     (y_1 = f(x̄_1)),

so the mean of its outputs over steps 1..t is f of the mean inputs, exactly, at
every t: GELU, LayerNorm, Softmax, a product of two spiking tensors (S_t·R_t/t −
S_{t−1}·R_{t−1}/(t−1)), anything. For a positively homogeneous f (MaxPool) the
factors t cancel: y_t = f(S_t) − f(S_{t−1}) on the running sums S_t.

No state: the running sums and the step count are CumSums (``accumulators``) and
the difference with the previous step is a Sub whose second input is the step
before (``differences``); the streaming format turns both into state.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.graph.builder import GraphBuilder


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
    CumSum and Sub nodes it adds go to ``accumulators`` and ``differences``."""

    def __init__(self, make: GraphBuilder, steps: gs.Variable, layout=lambda tensor: None
                 ) -> None:
        self.make = make
        self.steps = steps
        self.layout = layout
        self.accumulators: list[str] = []
        self.differences: list[str] = []
        self._sums: dict[int, tuple[gs.Tensor, gs.Variable]] = {}
        self._means: dict[int, gs.Variable] = {}
        self._counts: gs.Variable | None = None

    def _front(self, tensor: gs.Tensor, layout: tuple[int, int] | None = None) -> gs.Tensor:
        """``tensor`` with its folded batch axis first (its own layout, or ``layout``)."""
        layout = layout or self.layout(tensor)
        if layout is None:
            return tensor
        return self.make("Transpose", [tensor], tensor.dtype,
                         {"perm": front_permutation(layout)})

    def _per_step(self, tensor: gs.Tensor) -> gs.Variable:
        """``tensor`` [T·N, ...] (batch first) as [T, N·...]."""
        make = self.make
        shape = make("Concat", [self.steps, make.const([-1])], np.int64, {"axis": 0})
        return make("Reshape", [tensor, shape], tensor.dtype)

    def _cumulative(self, per_step: gs.Variable) -> gs.Variable:
        summed = self.make("CumSum", [per_step, self.make.const(0)], per_step.dtype)
        self.accumulators.append(summed.inputs[0].name)
        return summed

    def _back(self, per_step: gs.Variable, like: gs.Tensor, front: gs.Tensor,
              output: gs.Variable | None = None) -> gs.Variable:
        """``per_step`` in the shape and layout of ``like``, whose batch-first form is
        ``front`` (into ``output`` when given)."""
        make = self.make
        layout = self.layout(like)
        shaped = make("Reshape", [per_step, make("Shape", [front], np.int64)], per_step.dtype,
                      output=output if layout is None else None)
        if layout is None:
            return shaped
        return make("Transpose", [shaped], per_step.dtype, {"perm": back_permutation(layout)},
                    output=output)

    def counts(self) -> gs.Variable:
        """[T, 1] float32: t at row t (a running sum of ones, so streaming counts too)."""
        if self._counts is None:
            make = self.make
            ones = make("ConstantOfShape", [make("Concat", [self.steps, make.const([1])],
                                                 np.int64, {"axis": 0})], np.float32,
                        {"value": gs.Constant(make.name("one"), np.ones(1, np.float32))})
            self._counts = self._cumulative(ones)
        return self._counts

    def _summed(self, tensor: gs.Tensor) -> tuple[gs.Tensor, gs.Variable]:
        """``tensor`` batch first, and its running sum per step [T, N·...] (cached)."""
        if id(tensor) not in self._sums:
            front = self._front(tensor)
            self._sums[id(tensor)] = front, self._cumulative(self._per_step(front))
        return self._sums[id(tensor)]

    def running_sum(self, tensor: gs.Tensor) -> gs.Variable:
        """``tensor`` summed over steps 1..t at every step t, same shape."""
        front, summed = self._summed(tensor)
        return self._back(summed, tensor, front)

    def running_mean(self, tensor: gs.Tensor) -> gs.Variable:
        """``tensor`` averaged over steps 1..t at every step t, same shape (cached)."""
        if id(tensor) not in self._means:
            front, summed = self._summed(tensor)
            mean = self.make("Div", [summed, self.counts()], tensor.dtype)
            self._means[id(tensor)] = self._back(mean, tensor, front)
        return self._means[id(tensor)]

    def difference(self, node: gs.Node, index: int = 0, scaled: bool = True) -> None:
        """Make ``node``'s output ``index`` (which keeps its name) the difference of
        t·(what the node computes) between consecutive steps; without the factor t
        when ``scaled`` is False (the node reads running sums)."""
        make = self.make
        result = node.outputs[index]
        computed = gs.Variable(make.name(f"{node.name}_of_means"), result.dtype)
        node.outputs[index] = computed
        front = self._front(computed, self.layout(result))
        per_step = self._per_step(front)
        if scaled:
            per_step = make("Mul", [per_step, self.counts()], result.dtype)
        shifted = make("Pad", [per_step, make.const([1, 0, 0, 0])], result.dtype)
        previous = make("Slice", [shifted, make.const([0]), make.const([-1])], result.dtype)
        step = make("Sub", [per_step, previous], result.dtype)
        self.differences.append(step.inputs[0].name)
        self._back(step, result, front, output=result)

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
