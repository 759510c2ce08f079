"""The IFNode function body against the numpy reference and hand-computed spikes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from onnx_snn import OnnxSnnError
from onnx_snn.ops.dynamics import simulate_if
from onnx_snn.ops.function_bodies import IF_ATTRIBUTES
from onnx_snn.ops.if_node_model import if_node_model
from onnx_snn.snn.neurons import IFNeuron


def if_model(shape: list, neuron: IFNeuron, opset: int = 17) -> onnx.ModelProto:
    """A model holding one IFNode on input X [T*N, ...] with T as input."""
    return if_node_model(neuron.attributes(), ["TN", *shape[1:]], opset)


def run_if(x_seq: np.ndarray, neuron: IFNeuron, opset: int = 17) -> np.ndarray:
    """Spikes from onnxruntime for a [T, N, ...] sequence (folded to [T*N, ...])."""
    steps = x_seq.shape[0]
    folded = x_seq.reshape(-1, *x_seq.shape[2:])
    model = if_model(list(folded.shape), neuron, opset)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    spikes = session.run(None, {"X": folded, "T": np.array(steps, dtype=np.int64)})[0]
    return spikes.reshape(x_seq.shape)


def reference(x_seq: np.ndarray, neuron: IFNeuron) -> np.ndarray:
    return simulate_if(x_seq, neuron.v_threshold, neuron.v_reset, neuron.v_init)


def test_hand_computed_soft_reset() -> None:
    """x = 0.25 with θ = 1: potential 0.25, 0.5, 0.75, 1.0 -> fires exactly at the boundary."""
    x = np.full((8, 1, 1), 0.25, dtype=np.float32)
    spikes = run_if(x, IFNeuron(1.0))
    assert spikes[:, 0, 0].tolist() == [0, 0, 0, 1, 0, 0, 0, 1]


def test_hand_computed_hard_reset() -> None:
    """x = 0.75, θ = 1, v_reset = -0.5: 0.75, 1.5 (fire -> -0.5), 0.25, 1.0 (fire) ..."""
    x = np.full((6, 1, 1), 0.75, dtype=np.float32)
    spikes = run_if(x, IFNeuron(1.0, v_reset=-0.5))
    assert spikes[:, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]


def test_soft_reset_keeps_the_surplus() -> None:
    """Soft reset subtracts θ: x = 1.5 fires at every step after the first charge."""
    x = np.full((4, 1, 1), 1.5, dtype=np.float32)
    # soft: the potential after each spike grows 0.5, 1.0, 1.5, 2.0; hard: back to 0
    assert run_if(x, IFNeuron(1.0))[:, 0, 0].tolist() == [1, 1, 1, 1]
    assert run_if(x, IFNeuron(1.0, v_reset=0.0))[:, 0, 0].tolist() == [1, 1, 1, 1]
    x = np.full((4, 1, 1), 0.6, dtype=np.float32)
    assert run_if(x, IFNeuron(1.0))[:, 0, 0].tolist() == [0, 1, 0, 1]  # 0.6, 1.2->0.2, 0.8, 1.4


def test_hand_computed_burst_and_signed_neurons() -> None:
    """k = clip(floor(h/θ), least, most) spikes a step, then v = h - k·θ (soft) or
    v_reset where k != 0 (hard); θ = 1 throughout."""
    def spikes(inputs: list[float], neuron: IFNeuron) -> list[float]:
        return run_if(np.array(inputs, np.float32).reshape(-1, 1, 1), neuron)[:, 0, 0].tolist()

    # h = 2.5 -> 2 (v 0.5); 0.75 -> 0; 4.75 -> 3 at most (v 1.75); 1.75 -> 1 (v 0.75)
    assert spikes([2.5, 0.25, 4.0, 0.0], IFNeuron(1.0, max_spikes=3)) == [2, 0, 3, 1]
    # h = -1.5 -> -2 (v 0.5); 0.75 -> 0; 3.75 -> 2 at most (v 1.75)
    assert spikes([-1.5, 0.25, 3.0], IFNeuron(1.0, max_spikes=2, signed=True)) == [-2, 0, 2]
    # one spike of either sign: h = -0.5 -> -1 (v 0.5); 0.5 -> 0; 1.5 -> 1
    assert spikes([-0.5, 0.0, 1.0], IFNeuron(1.0, signed=True)) == [-1, 0, 1]
    # hard reset to 0: h = 2.5 -> 2 (v 0); 0.75 -> 0 (v 0.75); 1.25 -> 1
    assert spikes([2.5, 0.75, 0.5], IFNeuron(1.0, v_reset=0.0, max_spikes=2)) == [2, 0, 1]


@pytest.mark.parametrize("value", [0, 2.5, True, 2**24 + 1])
def test_max_spikes_must_be_a_whole_number_from_one(value) -> None:
    with pytest.raises(OnnxSnnError, match="max_spikes"):
        IFNeuron(max_spikes=value)


def test_v_init_is_a_fraction_of_the_threshold() -> None:
    """θ = 2, v_init = 0.5 starts at 1.0: with x = 0.5 the potential is 1.5, 2.0 (fire),
    0.5, 1.0, ... so the first spike comes two steps earlier than from 0."""
    x = np.full((6, 1, 1), 0.5, dtype=np.float32)
    assert run_if(x, IFNeuron(2.0, v_init=0.5))[:, 0, 0].tolist() == [0, 1, 0, 0, 0, 1]
    assert run_if(x, IFNeuron(2.0))[:, 0, 0].tolist() == [0, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("v_reset", [None, 0.0, -0.3])
@pytest.mark.parametrize("shape", [(7, 5, 33), (5, 3, 4, 6, 6), (9, 1, 16), (1, 4, 8)])
def test_function_matches_reference_bit_for_bit(shape, v_reset, rng) -> None:
    """2-D and 4-D inputs, N = 1, T = 1, large and negative values, both resets."""
    x = (rng.normal(size=shape) * 2).astype(np.float32)
    x.reshape(-1)[::7] = 0.5  # values that hit the threshold after exact accumulation
    x.reshape(-1)[3::11] = 1e6
    x.reshape(-1)[5::13] = -1e6
    neuron = IFNeuron(0.5, v_reset)
    spikes = run_if(x, neuron)
    expected = reference(x, neuron)
    assert spikes.dtype == np.float32
    assert np.array_equal(spikes, expected)
    assert 0 < spikes.mean() < 1


def test_values_exactly_at_threshold_fire() -> None:
    theta = 0.7
    x = np.full((3, 2, 2), np.float32(theta), dtype=np.float32)
    spikes = run_if(x, IFNeuron(theta))
    assert spikes.all()
    below = np.full((3, 2, 2), np.nextafter(np.float32(theta), np.float32(0)), dtype=np.float32)
    assert run_if(below[:1], IFNeuron(theta)).sum() == 0


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_function_valid_across_opsets(opset, rng) -> None:
    x = rng.normal(size=(4, 3, 10)).astype(np.float32)
    neuron = IFNeuron(1.0, v_reset=0.0)
    model = if_model([12, 10], neuron, opset)
    onnx.checker.check_model(model, full_check=True)
    assert np.array_equal(run_if(x, neuron, opset), reference(x, neuron))


def test_reference_evaluator_and_inlined_function_agree(rng) -> None:
    """Attributes are written explicitly, so tools that ignore defaults still work."""
    from onnx.inliner import inline_local_functions

    x = rng.normal(size=(6, 2, 5)).astype(np.float32)
    neuron = IFNeuron(0.8, v_reset=-0.1, v_init=0.2)
    model = if_model([12, 5], neuron)
    feed = {"X": x.reshape(12, 5), "T": np.array(6, dtype=np.int64)}
    by_reference = ReferenceEvaluator(model).run(None, feed)[0]
    inlined = inline_local_functions(model)
    by_inlined = ort.InferenceSession(inlined.SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(None, feed)[0]
    expected = reference(x, neuron).reshape(12, 5)
    assert np.array_equal(by_reference, expected)
    assert np.array_equal(by_inlined, expected)


def test_every_attribute_is_written(rng) -> None:
    assert set(IFNeuron().attributes()) == set(IF_ATTRIBUTES)
    assert IFNeuron(v_reset=None).attributes()["hard_reset"] == 0
    assert IFNeuron(v_reset=0.0).attributes()["hard_reset"] == 1
