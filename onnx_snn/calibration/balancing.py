"""Threshold balancing: per-channel thresholds that minimise the error of the spiking
rate, balanced layer by layer to their fixed point
(docs/semantics.md, "Post-training improvements")."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.calibration.collectors import Collector
from onnx_snn.calibration.histogram import ChannelHistogram
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.layout import channel_axis, per_channel_shape
from onnx_snn.validation import check_finite, check_float32_normal, check_positive_int

#: The default number of levels L balanced for: a few-step target.
BALANCED_TIMESTEPS = 16


class ThresholdBalancingHook(Collector):
    """Per channel (``onnx_snn.graph.layout``), the threshold θ that minimises
    Σ (q_θ(x) − x)² over all the calibration values x of the channel, where
    ``q_θ(x) = θ·clip(floor(L·x/θ + v_init), 0, L)/L`` is the rate of an IF neuron
    with soft reset driven for L = ``timesteps`` levels by x (Li et al., ICML 2021;
    Bu et al., ICLR 2022, QCFS).

    Layers interact: once a layer's θ is known, the layers after it see q_θ(x) in
    place of x. The balanced thresholds are the fixed point of that coupling, reached
    exactly in one pass per layer depth (``driver.pass_levels``): a layer is measured
    once, after every balanced layer above it is final, from histograms over all the
    data (``histogram.ChannelHistogram``, which does not depend on the batching; the
    candidates, a grid of step at most max/1024, are in ``best_thresholds``). θ is
    never below ``eps``.
    """

    layerwise = True
    splits = True  # a histogram counts values whatever their batching
    #: The fetched values and their reordered copy, and q_θ's chain, which runs in every
    #: pass: on ResNet-18 at 224x224 (802,816 values in its largest layer) peak RSS grew
    #: 40 MB a sample in the first pass and 27 MB in the later ones, against 11.6 MB
    #: without balancing.
    working_bytes = 16
    graph_bytes = 20

    def __init__(self, timesteps: int = BALANCED_TIMESTEPS, v_init: float = 0.5,
                 eps: float = 1e-6) -> None:
        super().__init__("threshold-balancing", None)
        self.timesteps = check_positive_int(timesteps, "timesteps")
        self.v_init = check_finite(v_init, "v_init")
        if not 0.0 <= self.v_init <= 1.0:
            raise OnnxSnnError(f"v_init is a fraction of the threshold in [0, 1], got {v_init!r}")
        self.eps = check_float32_normal(eps, "eps")
        self._name = ""
        self._inputs: tuple[str, str, np.dtype] | None = None
        self._histogram: ChannelHistogram | None = None
        self._axis = 1

    def feeds(self) -> dict[str, np.ndarray]:
        theta_name, gate_name, dtype = self._inputs
        quantise = self.scale is not None
        theta = self.scale if quantise else np.ones(self._histogram.zeros.shape)
        return {theta_name: theta.astype(dtype), gate_name: np.array(quantise)}

    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        """Route ``activation``'s consumers through q_θ (once θ is known); fetch it raw."""
        shape = activation.shape
        axis = channel_axis(activation, len(shape)) if shape is not None and len(shape) >= 2 \
            else None
        channels = None if axis is None else shape[axis]
        if not isinstance(channels, int):
            raise OnnxSnnError(f"'{activation.name}': threshold balancing needs a known rank "
                               f">= 2 and channel count, got shape {shape}")
        consumers = list(activation.outputs)
        dtype = activation.dtype
        make = GraphBuilder(graph, f"{activation.name}__balance_")
        theta = gs.Variable(make.name("theta"), dtype, [channels])
        gate = gs.Variable(make.name("quantise"), np.bool_, [])
        graph.inputs.extend([theta, gate])
        view = make("Reshape", [theta, make.const(per_channel_shape(channels, axis, len(shape)))],
                    dtype)
        levels = float(self.timesteps)
        scaled = make("Add", [make("Mul", [make("Div", [activation, view], dtype),
                                           make.const(levels, dtype)], dtype),
                              make.const(self.v_init, dtype)], dtype)
        count = make("Clip", [make("Floor", [scaled], dtype), make.const(0.0, dtype),
                              make.const(levels, dtype)], dtype)
        rate = make("Mul", [count, make("Div", [view, make.const(levels, dtype)], dtype)], dtype)
        quantised = make("Where", [gate, rate, activation], dtype)
        for consumer in consumers:
            for index, tensor in enumerate(consumer.inputs):
                if tensor is activation:
                    consumer.inputs[index] = quantised
        self._name, self._inputs = activation.name, (theta.name, gate.name, np.dtype(dtype))
        self._histogram = ChannelHistogram(channels)
        self._axis = axis
        return [activation]

    def observe(self, fetched: list[np.ndarray]) -> None:
        self.observe_part(fetched)
        self.batch_done()

    def observe_part(self, fetched: list[np.ndarray]) -> None:
        self._histogram.add(fetched[0], self._name, self._axis)

    def batch_done(self) -> None:
        self.batches += 1

    def pass_done(self) -> None:
        """θ from this pass's histograms: from now on the layers after see q_θ(x)."""
        self.scale = np.maximum(self._histogram.best_thresholds(self.timesteps, self.v_init),
                                self.eps)
