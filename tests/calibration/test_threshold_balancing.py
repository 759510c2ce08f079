"""Threshold balancing (``BalancingHookFactory``): per channel, the θ minimising
Σ (q_θ(x) − x)², q_θ(x) = θ·clip(floor(L·x/θ + v_init), 0, L)/L, over the whole data,
balanced layer by layer; checked against brute force written here."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from conftest import make_model
from onnx import TensorProto, helper
from pattern_models import Net, images

from onnx_snn import Calibration, NeuronFactory, OnnxSnnError, convert
from onnx_snn.calibration import BalancingHookFactory, HookFactory, calibrate
from onnx_snn.calibration.driver import pass_levels


def rate(theta: float, x: np.ndarray, levels: int, v_init: float) -> np.ndarray:
    """The IF neuron's rate for a constant input x over ``levels`` steps."""
    return theta * np.clip(np.floor(levels * x / theta + v_init), 0, levels) / levels


def error(theta: float, x: np.ndarray, levels: int, v_init: float) -> float:
    return float(np.square(rate(theta, x, levels, v_init) - x).sum())


def brute_force(x: np.ndarray, levels: int = 16, v_init: float = 0.5,
                points: int = 4096) -> tuple[float, float]:
    """The θ among ``points`` even steps up to max(x) with the least Σ (q_θ(x) − x)²,
    and that least error."""
    candidates = x.max() * np.arange(1, points + 1) / points
    errors = [error(t, x, levels, v_init) for t in candidates]
    return float(candidates[int(np.argmin(errors))]), float(min(errors))


def assert_near_brute_force(theta: np.ndarray, values: np.ndarray, levels: int = 16,
                            v_init: float = 0.5, steps: int | None = 2) -> None:
    """Per channel (axis 1): θ's error within 1 % of the brute-force least error, and
    with ``steps``, θ within that many steps of the grid (max/1024) of the argmin."""
    channels = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1).astype(np.float64)
    for c, x in enumerate(channels):
        expected, least = brute_force(x, levels, v_init)
        assert error(theta[c], x, levels, v_init) <= 1.01 * least, (c, theta[c], expected)
        if steps is not None:
            assert abs(theta[c] - expected) <= steps * x.max() / 1024, (c, theta[c], expected)


def conv_net() -> onnx.ModelProto:
    """Three Conv-Relu layers and a head: three neuron layers in a chain."""
    net = Net(seed=7)
    h = net.relu(net.conv("x", 3, 4), "relu1")
    h = net.relu(net.conv(h, 4, 6), "relu2")
    h = net.relu(net.conv(h, 6, 4), "relu3")
    return net.model(net.head(h, 4))


def dense_net(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x -> W1 -> relu1 -> W2 -> relu2."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["y"], name="relu2")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", w1.shape[0]])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                     ["N", w2.shape[1]])],
                      {"w1": w1, "w2": w2})


def balance(model: onnx.ModelProto, x: np.ndarray, batch_size: int = 50, **settings):
    """``calibrate`` with one balancing hook per Relu: (the calibration, the hooks)."""
    factory = BalancingHookFactory(**settings)
    relus = [n.name for n in model.graph.node if n.op_type == "Relu"]
    hooks = {name: factory.create() for name in relus}
    return calibrate(model, x, hooks, batch_size=batch_size, progress=False), hooks


def test_thresholds_do_not_depend_on_the_batch_size() -> None:
    x = images(seed=3, count=200)["x"]
    model = conv_net()
    results = [convert(model, x, batch_size=size, hook_factory=BalancingHookFactory(),
                       progress=False).calibration for size in (2, 10, 100)]
    for result in results[1:]:
        assert result.passes == results[0].passes == 3
        for layer, first in zip(result.layers, results[0].layers):
            np.testing.assert_array_equal(layer.scale, first.scale)
    assert [r.batches for r in results] == [100, 20, 2]
    assert all(np.shape(layer.scale) == (c,) for layer, c in zip(results[0].layers, (4, 6, 4)))


@pytest.mark.parametrize("levels, v_init, heavy_tail", [
    (16, 0.5, False), (16, 0.5, True), (4, 0.0, False), (8, 1.0, False)])
def test_one_layer_is_the_brute_force_argmin(levels, v_init, heavy_tail) -> None:
    """θ is compared with the argmin where the error is smooth in θ (the default
    setting); a heavy tail makes it flat, and v_init 0 or 1 makes it jagged, with
    minima of nearly equal error far apart, so there only the error is compared."""
    rng = np.random.default_rng(11)
    weights = np.array([1.0, 3.0, 0.2, -1.0], np.float32).reshape(1, 4, 1, 1)
    shape = (150, 4, 2, 2)
    x = np.abs(rng.standard_t(3, size=shape) if heavy_tail else rng.gamma(2.0, size=shape))
    x = x.astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "w"], ["h"]),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", 4, 2, 2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 2, 2])],
                       {"w": weights})
    result, _ = balance(model, x, timesteps=levels, v_init=v_init)
    theta = result.scales["relu"]
    values = np.maximum(x * weights, 0)
    smooth = (levels, v_init) == (16, 0.5) and not heavy_tail
    assert_near_brute_force(theta[:3], values[:, :3], levels, v_init,
                            steps=2 if smooth else None)
    assert theta[3] == 1e-6  # a channel that never activates gets eps
    assert result.passes == 1  # nothing upstream: one pass


def test_the_second_layer_sees_the_quantised_first() -> None:
    """θ2 is the argmin on relu(q_θ1(relu(x·W1))·W2), computed here in numpy."""
    rng = np.random.default_rng(12)
    w1 = rng.normal(size=(3, 5)).astype(np.float32)
    w2 = rng.normal(size=(5, 3)).astype(np.float32)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    result, _ = balance(dense_net(w1, w2), x, timesteps=4)
    theta1, theta2 = result.scales["relu1"], result.scales["relu2"]
    a1 = np.maximum(x @ w1, 0)
    assert_near_brute_force(theta1, a1, levels=4)
    quantised = np.stack([rate(t, a1[:, c], 4, 0.5) for c, t in enumerate(theta1)], axis=1)
    a2 = np.maximum(quantised.astype(np.float32) @ w2, 0)
    assert_near_brute_force(theta2, a2, levels=4)
    ann = np.maximum(a1 @ w2, 0).astype(np.float64)  # the unquantised input fits worse
    assert any(error(theta2[c], a2[:, c], 4, 0.5) < 0.97 * error(brute_force(ann[:, c], 4)[0],
                                                                 a2[:, c], 4, 0.5)
               for c in range(3))
    assert result.passes == 2  # one per layer depth


def branching_net() -> onnx.ModelProto:
    """relu_a and relu_b side by side on x, their sum into relu_c, then relu_d."""
    nodes = [helper.make_node("Mul", ["x", "wa"], ["ha"]),
             helper.make_node("Relu", ["ha"], ["a"], name="relu_a"),
             helper.make_node("Mul", ["x", "wb"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["b"], name="relu_b"),
             helper.make_node("Add", ["a", "b"], ["hc"]),
             helper.make_node("Relu", ["hc"], ["c"], name="relu_c"),
             helper.make_node("Mul", ["c", "wa"], ["hd"]),
             helper.make_node("Relu", ["hd"], ["y"], name="relu_d")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", 2, 3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
                      {"wa": np.array([[1.0], [-0.5]], np.float32),
                       "wb": np.array([[0.7], [2.0]], np.float32)})


def test_each_layer_is_balanced_after_the_layers_above(tmp_path) -> None:
    """One pass per depth of balanced layers; a Max hook below a balanced layer is
    measured after it, on its quantised output."""
    x = np.random.default_rng(8).normal(size=(40, 2, 3)).astype(np.float32)
    model = branching_net()
    hooks = {name: BalancingHookFactory().create() for name in ("relu_a", "relu_b", "relu_c",
                                                                  "relu_d")}
    graph = gs.import_onnx(model)
    assert pass_levels(graph, hooks) == {"relu_a": 1, "relu_b": 1, "relu_c": 2, "relu_d": 3}
    mixed = {**hooks, "relu_c": HookFactory().create()}
    assert pass_levels(graph, mixed) == {"relu_a": 1, "relu_b": 1, "relu_c": 2, "relu_d": 2}
    result = calibrate(model, x, mixed, batch_size=40, progress=False)  # Max of one batch
    assert result.passes == 2
    theta_a, theta_b = result.scales["relu_a"], result.scales["relu_b"]
    a = np.maximum(x * np.array([1.0, -0.5], np.float32)[None, :, None], 0)
    b = np.maximum(x * np.array([0.7, 2.0], np.float32)[None, :, None], 0)
    quantised = sum(np.stack([rate(t, v[:, c], 16, 0.5) for c, t in enumerate(theta)], axis=1)
                    for v, theta in ((a, theta_a), (b, theta_b)))
    assert result.scales["relu_c"] == pytest.approx(np.maximum(quantised, 0).max(), rel=1e-6)
    result.save(tmp_path / "scales.json")
    assert Calibration.load(tmp_path / "scales.json").passes == 2


def test_balanced_snn_tracks_the_ann() -> None:
    """End to end: at T = 16 with v_init 0.5, the spiking conv net's mean output is
    closer to the ANN's than with Max scales."""
    from pattern_models import run_ann

    from onnx_snn.runtime import SpikingSession

    x = images(seed=5, count=64)["x"]
    model = conv_net()
    target = run_ann(model, {"x": x})[0]
    errors = {}
    for name, factory in (("max", None), ("balanced", BalancingHookFactory())):
        snn = convert(model, x, hook_factory=factory, progress=False,
                      neuron_factory=NeuronFactory(v_init=0.5)).model
        errors[name] = np.abs(SpikingSession(snn).run(x, 16).mean - target).mean()
    assert errors["balanced"] < errors["max"]


@pytest.mark.parametrize("settings, needle", [
    ({"timesteps": 0}, "timesteps"), ({"v_init": 1.5}, "v_init"), ({"eps": 0.0}, "eps")])
def test_bad_settings_are_refused_at_once(settings, needle) -> None:
    with pytest.raises(OnnxSnnError, match=needle):
        BalancingHookFactory(**settings)


def test_data_read_once_is_refused_with_a_clear_error() -> None:
    x = images(seed=6, count=20)["x"]
    with pytest.raises(OnnxSnnError, match="more than once"):
        convert(conv_net(), (x[i:i + 5] for i in range(0, 20, 5)),
                hook_factory=BalancingHookFactory(), progress=False)
