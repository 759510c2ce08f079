"""Each few-step accuracy method against a hand computation on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper, numpy_helper

from onnx_snn import HookFactory, NeuronFactory, OnnxSnnError, convert
from onnx_snn.calibration import BalancingHookFactory
from onnx_snn.config import PRESETS
from onnx_snn.runtime import SpikingSession


def channel_model(weights: list[float]) -> onnx.ModelProto:
    """y = relu(x * w) with one weight per channel; x [N, C, 2, 2]."""
    w = np.asarray(weights, np.float32).reshape(-1, 1, 1)
    nodes = [helper.make_node("Mul", ["x", "w"], ["h"]),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    c = len(weights)
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", c, 2, 2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, 2, 2])],
                      {"w": w})


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


@pytest.mark.parametrize("mode", ["max", "90%", 0.5])
def test_per_channel_scales_follow_spec_per_channel(mode) -> None:
    rng = np.random.default_rng(0)
    weights = [1.0, 2.0, -1.0]  # the last channel never activates on x >= 0
    x = rng.random((10, 3, 2, 2)).astype(np.float32)
    result = convert(channel_model(weights), x, batch_size=4, progress=False,
                     hook_factory=HookFactory(mode, momentum=0.3, per_channel=True))
    activation = np.maximum(x * np.asarray(weights, np.float32).reshape(1, 3, 1, 1), 0)
    expected = None
    for start in range(0, 10, 4):
        batch = activation[start:start + 4].transpose(1, 0, 2, 3).reshape(3, -1)
        if mode == "max":
            s_t = batch.max(axis=1).astype(np.float64)
        elif mode == 0.5:
            s_t = batch.max(axis=1).astype(np.float64) * 0.5
        else:
            s_t = np.array([np.percentile(row, 90.0) for row in batch], dtype=np.float64)
        expected = s_t if expected is None else 0.7 * expected + 0.3 * s_t
    scale = result.layers[0].scale
    np.testing.assert_allclose(scale, expected, rtol=1e-12)
    assert scale[2] == 0.0
    gain = initializer(result.model, "relu__input_gain")
    assert gain.shape == (3, 1, 1)
    np.testing.assert_array_equal(gain.reshape(-1), [np.float32(1 / scale[0]),
                                                     np.float32(1 / scale[1]), 0.0])
    out = SpikingSession(result.model).run(x, 64).per_step
    assert not out[:, :, 2].any()  # the dead channel stays silent instead of dividing by 0


def test_per_channel_scales_track_each_channel_better_than_per_layer() -> None:
    """Channels of very different ranges: per-layer scales starve the small channel."""
    x = np.random.default_rng(1).random((32, 2, 2, 2)).astype(np.float32)
    model = channel_model([0.05, 4.0])
    activation = np.maximum(x * np.array([0.05, 4.0], np.float32).reshape(1, 2, 1, 1), 0)
    errors = {}
    for per_channel in (False, True):
        result = convert(model, x, hook_factory=HookFactory("max", per_channel=per_channel),
                         progress=False)
        mean = SpikingSession(result.model).run(x, 16).mean
        errors[per_channel] = np.abs(mean[:, 0] - activation[:, 0]).mean()
    assert errors[True] < errors[False] / 4


def test_bias_calibration_matches_a_hand_computation() -> None:
    """y = relu(x) on x = 0.3, 0.7, 1.0 with Max scale 1 and T = 4 (soft reset, from 0):
    the SNN fires 1, 2 and 4 times (mean rate 7/12), the ANN's mean is 2/3, so the bias
    shift is 1/12. Shifted inputs 0.383, 0.783, 1.083 fire 1, 3 and 4 times: mean 2/3."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    x = np.array([[0.3], [0.7], [1.0]], np.float32)
    plain = convert(model, x, progress=False)
    calibrated = convert(model, x, bias_calibration=4, progress=False)
    assert plain.layers[0].bias_shift is None
    np.testing.assert_allclose(calibrated.layers[0].bias_shift, [1 / 12], rtol=1e-6)
    np.testing.assert_allclose(SpikingSession(plain.model).run(x, 4).mean.mean(), 7 / 12,
                               rtol=1e-6)
    np.testing.assert_allclose(SpikingSession(calibrated.model).run(x, 4).mean.mean(), 2 / 3,
                               rtol=1e-6)
    with pytest.raises(OnnxSnnError, match="positive number of time steps"):
        convert(model, x, bias_calibration=-1, progress=False)


def test_presets_set_their_methods() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                              name="pool")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", 3, 4, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 2, 2])],
                       {"w": w})
    x = rng.random((6, 3, 4, 4)).astype(np.float32)
    best = convert(model, x, preset="best", progress=False)
    (neuron,) = [n for n in best.model.graph.node if n.op_type == "IFNode"]
    attrs = {a.name: helper.get_attribute_value(a) for a in neuron.attribute}
    assert attrs["v_init"] == 0.5 and attrs["hard_reset"] == 0
    assert best.calibration.layers[0].mode == "threshold-balancing"
    assert np.shape(best.layers[0].scale) == (2,)
    producers = {o: n for n in best.model.graph.node for o in n.output}
    pool = next(n for n in best.model.graph.node if n.op_type == "MaxPool")
    summed = producers[pool.input[0]]  # the spikes summed over steps
    assert summed.op_type == "RunningSum" and summed.name in json.loads(
        {p.key: p.value for p in best.model.metadata_props}["onnx_snn.accumulators"])

    with pytest.warns(UserWarning, match="over-counts"):
        classic = convert(model, x, preset="spikingjelly", progress=False)
    with pytest.warns(UserWarning, match="over-counts"):
        default = convert(model, x, progress=False)
    assert classic.model == default.model
    assert classic.calibration.layers[0].mode == "Max"
    with pytest.raises(OnnxSnnError, match="unknown preset"):
        convert(model, x, preset="fastest", progress=False)
    assert set(PRESETS) == {"spikingjelly", "best"}


def test_explicit_arguments_override_the_preset() -> None:
    x = np.random.default_rng(4).random((6, 3, 2, 2)).astype(np.float32)
    result = convert(channel_model([1.0, 2.0, 3.0]), x, preset="best",
                     hook_factory=HookFactory("max"), neuron_factory=NeuronFactory(v_init=0.25),
                     progress=False)
    assert np.ndim(result.layers[0].scale) == 0
    assert result.layers[0].neuron.attributes()["v_init"] == 0.25


def test_best_beats_spikingjelly_at_few_steps_on_digits() -> None:
    """End to end on the digits BN-CNN (calibrated on the training split in batches of
    100): the issue's targets are >= 0.97 at T = 8 and >= 0.99 at T = 16 for best."""
    torch = pytest.importorskip("torch")
    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export.torch import export_torch
    from onnx_snn.measure.evaluation import snn_accuracy

    x_train, y_train, x_test, y_test = load_digits_split()
    ann = export_torch(train_digits_cnn(x_train, y_train), torch.from_numpy(x_train[:2]),
                       dynamo=False)
    curves = {preset: snn_accuracy(convert(ann, x_train, preset=preset, progress=False,
                                           hook_factory=HookFactory("99.9%")
                                           if preset == "spikingjelly" else None).model,
                                   x_test, y_test, [4, 8, 16])
              for preset in ("spikingjelly", "best")}
    assert curves["best"][8] >= 0.97 and curves["best"][16] >= 0.99
    assert curves["best"][8] > curves["spikingjelly"][8]
    assert curves["best"][4] > curves["spikingjelly"][4] + 0.1


@pytest.mark.parametrize("factory", [HookFactory("90%", per_channel=True),
                                     BalancingHookFactory()], ids=["per-channel", "balancing"])
def test_per_channel_calibration_round_trips_through_json(tmp_path, factory) -> None:
    from onnx_snn import Calibration

    x = np.random.default_rng(5).random((9, 3, 2, 2)).astype(np.float32)
    model = channel_model([1.0, 0.5, 2.0])
    first = convert(model, x, hook_factory=factory, batch_size=4, progress=False)
    first.calibration.save(tmp_path / "scales.json")
    loaded = Calibration.load(tmp_path / "scales.json")
    np.testing.assert_array_equal(loaded.scales["relu"], first.calibration.scales["relu"])
    again = convert(model, calibration=loaded, hook_factory=factory, progress=False)
    assert again.model == first.model
