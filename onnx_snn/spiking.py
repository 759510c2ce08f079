"""The built-in rewrite: each chosen rectifier (Relu, Clip(0, a)) becomes
Mul(θ/s) -> neuron -> Mul(s).

θ is the neuron's threshold and s the Relu's calibrated scale (SPEC §1, §4).
The input gain is float32(θ/s) computed in double, a multiplication rather than
a division, so results agree exactly with the reference implementations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.neurons import Neuron
from onnx_snn.patterns import Pattern


@dataclass
class SpikingLayer:
    """A Relu to convert: its node name, calibrated scale and replacement neuron."""

    node: str
    scale: float
    neuron: Neuron

    @property
    def input_gain(self) -> np.float32:
        return np.float32(float(self.neuron.v_threshold) / float(self.scale))


class ReluToNeuron(Pattern):
    """Replace the rectifiers named in ``layers`` by scaled spiking neurons.

    Every neuron also reads ``timesteps``, the int64 scalar number of steps.
    """

    def __init__(self, layers: Sequence[SpikingLayer], timesteps: gs.Variable) -> None:
        self.layers = {layer.node: layer for layer in layers}
        self.timesteps = timesteps
        for layer in layers:
            theta = layer.neuron.v_threshold
            if not (math.isfinite(theta) and theta > 0):
                raise OnnxSnnError(f"Relu '{layer.node}': neuron threshold must be finite and "
                                   f"> 0, got {theta}")

    def match(self, node: gs.Node) -> bool:
        return node.op in ("Relu", "Clip") and node.name in self.layers

    def replace(self, node: gs.Node, graph: gs.Graph) -> list[gs.Node]:
        layer = self.layers[node.name]
        neuron = layer.neuron
        name = node.name
        scaled = gs.Variable(f"{name}__scaled", np.float32)
        spikes = gs.Variable(f"{name}__spikes", np.float32)
        gain = gs.Constant(f"{name}__input_gain", np.array(layer.input_gain, dtype=np.float32))
        scale = gs.Constant(f"{name}__output_scale", np.array(layer.scale, dtype=np.float32))
        return [
            gs.Node("Mul", f"{name}__input_scaler", inputs=[node.inputs[0], gain],
                    outputs=[scaled]),
            gs.Node(neuron.op_type, name, attrs=neuron.attributes(),
                    inputs=[scaled, self.timesteps], outputs=[spikes], domain=neuron.domain),
            gs.Node("Mul", f"{name}__output_scaler", inputs=[spikes, scale],
                    outputs=list(node.outputs)),
        ]
