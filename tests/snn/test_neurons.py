"""Neuron types are recognised by their registered class, custom ones included, so the
passes treat them like the built-in IFNode."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_example, mlp_model
from onnx import helper, numpy_helper

from onnx_snn import NeuronFactory, OnnxSnnError, convert
from onnx_snn.ops.function_bodies import scan_neuron_function
from onnx_snn.runtime import SpikingSession
from onnx_snn.snn.neurons import IFNeuron, Neuron

EXAMPLE = load_example("custom_neuron")


class BroadcastLIF(EXAMPLE.LIFNeuron):
    """The example's LIF neuron, with a ``broadcast_input`` attribute: its function body
    (``scan_neuron_function``) then reads [S, N, ...] as IFNode does."""

    op_type = "BroadcastLIFNode"

    def attributes(self) -> dict:
        return {**super().attributes(), "broadcast_input": 0}

    def function(self, opset: int):
        kinds = {"v_threshold": "float", "v_reset": "float", "decay": "float",
                 "hard_reset": "int", "broadcast_input": "int"}
        return scan_neuron_function(self.domain, self.op_type, kinds, EXAMPLE.lif_step, opset)


def test_neuron_classes_register_their_op_type() -> None:
    assert Neuron.registered[("onnx_snn", "IFNode")] is IFNeuron
    # (the example module may be loaded again by other tests: the latest class wins)
    assert Neuron.registered[("my_neurons", "LIFNode")].__name__ == "LIFNeuron"
    assert Neuron.registered[("my_neurons", "BroadcastLIFNode")] is BroadcastLIF


def test_a_custom_first_neuron_reads_its_static_input_once() -> None:
    """Like IFNode, the first custom neuron of a direct-encoded model takes [S, N, ...]
    (``broadcast_input`` = 1) instead of T copies; a sequence of T copies of the input
    gives the same spikes, step by step, and so does the same neuron without it."""
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    ann = mlp_model([8, 16, 16, 4], seed=1)
    model = convert(ann, x, neuron_factory=NeuronFactory(BroadcastLIF, decay=0.9),
                    progress=False).model
    flags = {node.name: helper.get_attribute_value(
        next(a for a in node.attribute if a.name == "broadcast_input"))
        for node in model.graph.node if node.op_type == "BroadcastLIFNode"}
    assert flags == {"relu0": 1, "relu1": 0}
    session = SpikingSession(model)
    direct = session.run(x, timesteps=6).per_step
    repeated = session.run(np.broadcast_to(x, (6, *x.shape)), sequence=True).per_step
    np.testing.assert_array_equal(direct, repeated)
    plain = convert(ann, x, neuron_factory=NeuronFactory(EXAMPLE.LIFNeuron, decay=0.9),
                    progress=False).model
    np.testing.assert_array_equal(direct, SpikingSession(plain).run(x, timesteps=6).per_step)


def test_burst_neurons_spike_for_a_fraction_of_the_scale() -> None:
    """With up to B spikes a step, the input gain is θ·B/s and each spike stands for s/B,
    s being the calibrated scale: here the max of the Relu's output, computed in numpy."""
    model, x = mlp_model([4, 6, 2], seed=1), np.random.default_rng(0).random((8, 4), np.float32)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scale = np.maximum(x @ weights["w0"] + weights["b0"], 0).max()
    result = convert(model, x, neuron_factory=NeuronFactory(v_threshold=2.0, max_spikes=5),
                     progress=False)
    [layer] = result.layers
    assert layer.scale == pytest.approx(scale, rel=1e-6)
    assert layer.spike_value == layer.scale / 5
    assert layer.input_gain == np.float32(2.0 * 5 / layer.scale)


def test_signed_neurons_are_refused_on_rectifiers() -> None:
    """A signed neuron's output can be negative; a Relu's never is."""
    neurons = NeuronFactory(signed=True)
    assert neurons.create(1.0).attributes()["signed"] == 1
    with pytest.raises(OnnxSnnError, match="Relu 'relu0': a signed neuron fires negative"):
        convert(mlp_model([4, 6, 2]), np.ones((2, 4), np.float32), neuron_factory=neurons,
                progress=False)
