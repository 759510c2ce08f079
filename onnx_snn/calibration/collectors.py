"""Statistic collectors: one per calibrated activation
(docs/semantics.md, "Calibration statistics" and "Post-training improvements").

A ``Collector`` adds its reduction of one activation to a calibration copy of the
graph, so onnxruntime returns a few numbers per batch instead of whole activation
tensors, and folds each batch's numbers into its ``scale``. ``calibrate``
(``onnx_snn.calibration.driver``) drives them; a ``CollectorFactory`` makes a fresh
one for every activation (``Collector.with_args``, as torch.ao's observers do).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.calibration.modes import (
    CalibrationMode,
    Mode,
    check_momentum,
    numpy_linear_percentile,
)
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.layout import channel_axis
from onnx_snn.snn.rewrite import Scale
from onnx_snn.validation import check_bool

#: The calibration graph's input [rows of the whole batch, rows of this call], int64, fed
#: by the driver with each call: a collector whose reduction depends on the batch's size
#: (a percentile's rank) reads the whole batch's from it when a batch runs in parts.
BATCH_ROWS = "calibration__batch_rows"


def channel_layout(activation: gs.Variable) -> tuple[int, int]:
    """(channel axis, rank) of ``activation``, whose rank must be known
    (``onnx_snn.graph.layout``)."""
    if activation.shape is None or len(activation.shape) < 2:
        raise OnnxSnnError(f"'{activation.name}': per-channel calibration needs a known rank "
                           f">= 2 (got shape {activation.shape})")
    rank = len(activation.shape)
    return channel_axis(activation, rank), rank


def channel_axes(activation: gs.Variable) -> list[int]:
    """All axes but the channel axis of ``activation``."""
    axis, rank = channel_layout(activation)
    return [a for a in range(rank) if a != axis]


class Collector(ABC):
    """Collects a statistic of one activation over the calibration batches.

    The driver calls ``graph_outputs`` once, to add the collector's reduction
    to the calibration graph, then per batch ``feeds`` (extra graph inputs) and
    ``observe`` (the fetched results), and ``pass_done`` when its pass over the
    data has ended. A ``layerwise`` collector changes what the layers after it
    see (``feeds``): the driver measures it in a later pass than every
    layerwise collector upstream of it, once they are final. ``scale`` is the
    result and ``batches`` how many batches made it; ``mode`` and ``momentum``
    describe the setting in a saved calibration.

    A collector that ``splits`` takes a batch that does not fit the memory budget in
    parts instead (``observe_part`` for each, then ``batch_done``), with the result
    the whole batch would give; the driver cuts batches only when every collector of
    the pass splits.
    """

    #: True when the collector's result feeds back into what later layers see.
    layerwise = False
    #: True when the collector can take a batch in parts (``observe_part``).
    splits = False
    #: For the memory budget, bytes per value of its activation, a sample: what the
    #: collector's results and their handling add in its pass (``working_bytes``), and
    #: what its additions to the graph add in every pass (``graph_bytes``).
    working_bytes = 0
    graph_bytes = 0

    def __init__(self, mode: Mode | str, momentum: float | None) -> None:
        self.mode = mode
        self.momentum = momentum
        self.scale: Scale | None = None
        self.batches = 0

    @classmethod
    def with_args(cls, **kwargs: Any) -> CollectorFactory:
        """A factory of collectors of this class with these settings (checked now)."""
        return CollectorFactory(cls, **kwargs)

    def feeds(self) -> dict[str, np.ndarray]:
        """Extra graph inputs for the next batch (none by default)."""
        return {}

    @abstractmethod
    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        """Add this collector's reduction of ``activation`` to ``graph``; return what to
        fetch per batch."""

    @abstractmethod
    def observe(self, fetched: list[np.ndarray]) -> None:
        """Take one batch's fetched results."""

    def observe_part(self, fetched: list[np.ndarray]) -> None:
        """Take the fetched results of one part of a batch (collectors that ``split``)."""
        raise NotImplementedError(f"{type(self).__name__} does not take a batch in parts")

    def batch_done(self) -> None:
        """Every part of the batch has been observed (collectors that ``split``)."""
        raise NotImplementedError(f"{type(self).__name__} does not take a batch in parts")

    def pass_done(self) -> None:
        """The pass over the data that this collector observes has ended."""


class CollectorFactory:
    """Makes a fresh collector of one class, with fixed settings, per activation.

    The settings are checked when the factory is made, by making one collector.
    """

    def __init__(self, collector: type[Collector], **kwargs: Any) -> None:
        self.collector = collector
        self.kwargs = kwargs
        collector(**kwargs)  # bad settings fail here, not at calibration time

    def create(self) -> Collector:
        """A new, empty collector."""
        return self.collector(**self.kwargs)


class VoltageHook(Collector):
    """Collects the scale of one Relu's output over calibration batches
    (docs/semantics.md, "Calibration statistics").

    Per batch it computes a statistic ``s_t`` over the whole output tensor
    (batch axis included), then ``scale = s_t`` for the first batch and
    ``scale = (1 - momentum) * scale + momentum * s_t`` after that. With
    ``per_channel`` the same happens per channel (``onnx_snn.graph.layout``), all other axes
    pooled, and ``scale`` is an array.

    Its reduction is ``ReduceMax`` for "Max" and fractions of the max, and a
    ``TopK`` of just the elements a percentile needs. A batch run in parts gives the
    same ``s_t``: the largest of the parts' maxima, or the percentile of the parts'
    TopKs merged, each taken for the whole batch's rank (``BATCH_ROWS``).
    """

    splits = True
    working_bytes = 4  # a per-channel percentile's transposed copy

    def __init__(self, mode: Mode = "Max", momentum: float = 0.1,
                 per_channel: bool = False) -> None:
        super().__init__(mode, check_momentum(momentum))
        self.setting = CalibrationMode.parse(mode)
        self.per_channel = check_bool(per_channel, "per_channel")
        self._parts: list[list[np.ndarray]] = []

    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        """Add this hook's reduction of ``activation`` to ``graph``; return what to fetch."""
        make = GraphBuilder(graph, f"{activation.name}__calib_")
        axes = channel_axes(activation) if self.per_channel else None
        if self.setting.kind != "percentile":
            return [make.reduce("ReduceMax", activation, axes, activation.dtype)]
        return self._percentile_outputs(make, activation)

    def _percentile_outputs(self, make: GraphBuilder, activation: gs.Variable
                            ) -> list[gs.Variable]:
        """Per row of [C, n] (C = 1 per layer): TopK of the elements around the
        percentile's rank, and the [C, n] shape."""
        if self.per_channel:
            axis, rank = channel_layout(activation)
            perm = [axis, *(a for a in range(rank) if a != axis)]
            rows = make("Transpose", [activation], activation.dtype, {"perm": perm})
            rows = make("Reshape", [rows, make.const([0, -1])], activation.dtype)
        else:
            rows = make("Reshape", [activation, make.const([1, -1])], activation.dtype)
        shape = make("Shape", [rows], np.int64)
        part = make("Gather", [shape, make.const(1)], np.int64, {"axis": 0})
        count = make("Div", [make("Mul", [part, _batch_rows(make, 0)], np.int64),
                             _batch_rows(make, 1)], np.int64)  # the whole batch's, exactly
        as_double = make("Cast", [count], np.float64, {"to": onnx.TensorProto.DOUBLE})
        q = self.setting.value / 100.0
        index = make("Mul", [make("Sub", [as_double, make.const(1.0, np.float64)], np.float64),
                             make.const(q, np.float64)], np.float64)
        below = make("Cast", [make("Floor", [index], np.float64)], np.int64,
                     {"to": onnx.TensorProto.INT64})
        largest = q >= 0.5
        # One element of margin on each side absorbs any rounding between the
        # graph's index and numpy's; the exact neighbours are picked on the host.
        wanted = (make("Add", [make("Sub", [count, below], np.int64), make.const(1)], np.int64)
                  if largest else make("Add", [below, make.const(3)], np.int64))
        k = make("Reshape", [make("Min", [wanted, part], np.int64), make.const([1])], np.int64)
        values = gs.Variable(make.name("topk"), activation.dtype)
        make.graph.nodes.append(gs.Node(
            "TopK", make.name("topk_node"), attrs={"axis": -1, "largest": int(largest),
                                                   "sorted": 1},
            inputs=[rows, k], outputs=[values, gs.Variable(make.name("topk_index"), np.int64)]))
        return [values, shape]

    def statistic(self, fetched: list[np.ndarray]) -> Scale:
        """This batch's ``s_t`` from the fetched reduction results."""
        kind, value = self.setting.kind, self.setting.value
        if kind == "percentile":
            values, (_, count) = fetched[0], fetched[1]
            if value / 100.0 >= 0.5:
                result = numpy_linear_percentile(count, value, lambda j: values[:, count - 1 - j])
            else:
                result = numpy_linear_percentile(count, value, lambda j: values[:, j])
        else:
            result = fetched[0]
            if kind == "fraction":
                result = np.asarray(result, dtype=np.float64) * value
        result = np.asarray(result, dtype=np.float64)
        return result.reshape(-1) if self.per_channel else float(result.reshape(-1)[0])

    def update(self, s_t: Scale) -> None:
        """Fold one batch's statistic into the moving average."""
        if self.scale is None:
            self.scale = s_t
        else:
            self.scale = (1.0 - self.momentum) * self.scale + self.momentum * s_t
        self.batches += 1

    def observe(self, fetched: list[np.ndarray]) -> None:
        self.update(self.statistic(fetched))

    def observe_part(self, fetched: list[np.ndarray]) -> None:
        self._parts.append(fetched)

    def batch_done(self) -> None:
        parts, self._parts = self._parts, []
        self.observe(parts[0] if len(parts) == 1 else self._merged(parts))

    def _merged(self, parts: list[list[np.ndarray]]) -> list[np.ndarray]:
        """What the whole batch would have fetched, from the fetches of its parts."""
        if self.setting.kind != "percentile":
            return [np.maximum.reduce([part[0] for part in parts])]
        values = np.sort(np.concatenate([part[0] for part in parts], axis=1), axis=1)
        if self.setting.value / 100.0 >= 0.5:  # a TopK of the largest: descending
            values = values[:, ::-1]
        count = sum(int(part[1][1]) for part in parts)
        return [values, np.array([values.shape[0], count], np.int64)]


def _batch_rows(make: GraphBuilder, index: int) -> gs.Variable:
    """Entry ``index`` of the graph's ``BATCH_ROWS`` input (added at first use)."""
    rows = next((t for t in make.graph.inputs if t.name == BATCH_ROWS), None)
    if rows is None:
        rows = gs.Variable(BATCH_ROWS, np.int64, [2])
        make.graph.inputs.append(rows)
    return make("Gather", [rows, make.const(index)], np.int64, {"axis": 0})
