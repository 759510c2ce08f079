"""The built-in rewrite: each chosen rectifier (Relu, Clip(0, a)) becomes
Mul(θ/s) -> neuron -> Mul(s), or Mul(θ·B/s) -> neuron -> Mul(s/B) for a neuron
that fires up to B spikes a step.

θ is the neuron's threshold and s the Relu's calibrated scale
(docs/semantics.md, "The conversion" and "IF neuron"): one number per layer, or one
per channel (``onnx_snn.graph.layout``), when the scalers become per-channel Muls.
The input gain is float32(θ/s) computed in double, a multiplication rather than a
division, so results agree exactly with the reference implementations. A channel
whose scale is 0 never activated during calibration: its gain is 0, so it stays
silent. An optional per-channel ``bias_shift`` (bias calibration) is added before
the gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.layout import channel_axis, per_channel_shape
from onnx_snn.graph.naming import NameScope
from onnx_snn.graph.patterns import Pattern
from onnx_snn.snn.neurons import Neuron
from onnx_snn.validation import FLOAT32_MAX, FLOAT32_TINY

#: A calibrated scale: one number per layer, or an array with one per channel.
Scale = Union[float, np.ndarray]


@dataclass
class NeuronPlan:
    """How one rectifier becomes a neuron: its node name, calibrated scale(s), the
    neuron, and an optional per-channel bias shift (bias calibration)."""

    node: str
    scale: Scale
    neuron: Neuron
    bias_shift: np.ndarray | None = None

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.scale) > 0

    @property
    def spike_value(self) -> Scale:
        """What one spike stands for: s, or s/B for a neuron that fires B spikes a
        step at the scale s (a burst neuron)."""
        return self.scale / self.neuron.max_spikes if self.neuron.max_spikes > 1 else self.scale

    @property
    def input_gain(self) -> np.ndarray:
        """float32(θ/v) for the spike value v, computed in double; 0 where v is 0."""
        value = np.asarray(self.spike_value, dtype=np.float64)
        with np.errstate(divide="ignore"):
            gain = np.where(value > 0, float(self.neuron.v_threshold) / value, 0.0)
        return gain.astype(np.float32)


def check_layer(layer: NeuronPlan, activation: gs.Tensor, signed_site: bool = False
                ) -> NeuronPlan:
    """Refuse a layer whose per-channel scales do not match the activation's channels,
    whose neuron is signed on a rectifier or unsigned on a signed site
    (``onnx_snn.graph.signed_sites``), or whose input gain θ/s leaves float32's normal
    range."""
    scale = np.asarray(layer.scale)
    if scale.ndim:
        rank = len(activation.shape) if activation.shape else 0
        axis = channel_axis(activation, rank) if rank > 1 else None
        channels = None if axis is None else activation.shape[axis]
        if scale.ndim != 1 or axis is None or isinstance(channels, int) \
                and scale.size != channels:
            raise OnnxSnnError(f"Relu '{layer.node}': {scale.size} per-channel scales for an "
                               f"activation of shape {activation.shape}: expected one per "
                               f"channel (axis {axis})")
    if signed_site and not layer.neuron.signed:
        raise OnnxSnnError(f"'{layer.node}' reads values of either sign: it needs a signed "
                           f"neuron, and {type(layer.neuron).__name__} is not one")
    if layer.neuron.signed and not signed_site:
        raise OnnxSnnError(f"Relu '{layer.node}': a signed neuron fires negative spikes, but a "
                           "rectifier's output is never negative; signed neurons are for "
                           "values of either sign "
                           '(docs/semantics.md, "Burst and signed neurons")')
    positive = np.asarray(layer.spike_value)[scale > 0].astype(np.float64)
    gain = layer.neuron.v_threshold / positive
    if not np.all((gain >= FLOAT32_TINY) & (gain <= FLOAT32_MAX)):
        raise OnnxSnnError(f"Relu '{layer.node}': the input gain θ/s = "
                           f"{layer.neuron.v_threshold:g}/{positive.min():g} leaves "
                           "float32's normal range; use a threshold nearer the scale")
    return layer


def _channel_shape(values: np.ndarray, activation: gs.Tensor, node: str) -> np.ndarray:
    """Per-channel values shaped to broadcast along ``activation``'s channel axis
    (``onnx_snn.graph.layout``): [C, 1, 1] against [N, C, H, W], [C] against [N, H, W, C]."""
    if values.ndim == 0:
        return values
    if activation.shape is None or len(activation.shape) < 2:
        raise OnnxSnnError(f"Relu '{node}': per-channel scales need the activation's rank")
    rank = len(activation.shape)
    return values.reshape(per_channel_shape(values.size, channel_axis(activation, rank), rank))


class ReluToNeuron(Pattern):
    """Replace the rectifiers and signed sites named in ``layers`` by scaled spiking
    neurons.

    Every neuron also reads ``timesteps``, the int64 scalar number of steps. The
    neuron node keeps the rectifier's name; the nodes and tensors around it are
    named ``<rectifier>__<role>``, or from a fresh prefix (``scope``) when the
    model already uses such names.
    """

    def __init__(self, layers: Sequence[NeuronPlan], timesteps: gs.Variable,
                 scope: NameScope) -> None:
        self.layers = {layer.node: layer for layer in layers}
        self.timesteps = timesteps
        self.scope = scope
        for layer in layers:
            theta = layer.neuron.v_threshold
            if not (math.isfinite(theta) and theta > 0):
                raise OnnxSnnError(f"Relu '{layer.node}': neuron threshold must be finite and "
                                   f"> 0, got {theta}")

    def match(self, node: gs.Node) -> bool:
        return node.name in self.layers

    def replace(self, node: gs.Node, graph: gs.Graph) -> list[gs.Node]:
        layer = self.layers[node.name]
        neuron = layer.neuron
        name, source = node.name, node.inputs[0]
        p = self.scope.prefix(f"{name}__")

        def constant(suffix: str, values) -> gs.Constant:
            shaped = _channel_shape(np.asarray(values, dtype=np.float32), source, name)
            return gs.Constant(f"{p}{suffix}", shaped)

        nodes = []
        if layer.bias_shift is not None:
            shifted = gs.Variable(f"{p}shifted", np.float32)
            nodes.append(gs.Node("Add", f"{p}bias_shift",
                                 inputs=[source, constant("bias_shift", layer.bias_shift)],
                                 outputs=[shifted]))
            source_for_gain = shifted
        else:
            source_for_gain = source
        scaled = gs.Variable(f"{p}scaled", np.float32, source.shape)
        spikes = gs.Variable(f"{p}spikes", np.float32, source.shape)
        return nodes + [
            gs.Node("Mul", f"{p}input_scaler",
                    inputs=[source_for_gain, constant("input_gain", layer.input_gain)],
                    outputs=[scaled]),
            gs.Node(neuron.op_type, name, attrs=neuron.attributes(),
                    inputs=[scaled, self.timesteps], outputs=[spikes], domain=neuron.domain),
            gs.Node("Mul", f"{p}output_scaler",
                    inputs=[spikes, constant("output_scale", layer.spike_value)],
                    outputs=list(node.outputs)),
        ]
