"""The examples in examples/ run, and do what they claim.

Each example's ``main()`` runs once per module (fixtures); the other tests check
the examples' building blocks against answers computed here independently: a
numpy LIF simulation, torch's average pooling, and the default neuron factory.
"""

from __future__ import annotations

import json
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from conftest import load_example

from onnx_snn import NeuronFactory, convert, run_passes, simulate_if  # noqa: E402
from onnx_snn.runtime import SpikingSession

OPSET = 17


@pytest.fixture(scope="module")
def neuron_example() -> ModuleType:
    return load_example("custom_neuron")


@pytest.fixture(scope="module")
def pass_example() -> ModuleType:
    return load_example("custom_pass")


@pytest.fixture(scope="module")
def neuron_results(neuron_example: ModuleType) -> dict:
    return neuron_example.main(echo=lambda *_: None)


@pytest.fixture(scope="module")
def pass_results(pass_example: ModuleType) -> dict:
    return pass_example.main(echo=lambda *_: None)


# --------------------------------------------------------------------------- LIF neuron

def numpy_lif(x_seq: np.ndarray, v_threshold: float, v_reset: float | None,
              decay: float) -> np.ndarray:
    """Reference LIF in float32: h = decay*v + x; fire at h >= θ; soft or hard reset."""
    x_seq = x_seq.astype(np.float32)
    theta, beta = np.float32(v_threshold), np.float32(decay)
    v = np.zeros(x_seq.shape[1:], np.float32)
    spikes = np.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        h = beta * v + x_seq[t]
        fired = h >= theta
        spikes[t] = fired
        v = np.where(fired, np.float32(v_reset), h) if v_reset is not None \
            else h - fired.astype(np.float32) * theta
    return spikes


def run_neuron(neuron, x: np.ndarray, timesteps: int) -> np.ndarray:
    """Run one neuron node (its function body) in onnxruntime on time-folded ``x``."""
    node = helper.make_node(neuron.op_type, ["X", "T"], ["S"], domain=neuron.domain,
                            **neuron.attributes())
    graph = helper.make_graph(
        [node], "one_neuron",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["TN", *x.shape[1:]]),
         helper.make_tensor_value_info("T", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("S", TensorProto.FLOAT, ["TN", *x.shape[1:]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(neuron.domain, 1)],
                              functions=[neuron.function(OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x, "T": np.array(timesteps, np.int64)})[0]


@pytest.mark.parametrize("v_threshold, v_reset, decay", [
    (1.0, None, 1.0), (1.0, None, 0.9), (0.7, None, 0.5),
    (1.0, 0.0, 0.9), (0.8, -0.2, 0.75), (1.0, 0.3, 1.0),
])
def test_lif_function_matches_numpy(neuron_example, v_threshold, v_reset, decay):
    steps, batch = 9, 3
    x = np.random.default_rng(0).uniform(-0.4, 1.2, (steps * batch, 2, 5)).astype(np.float32)
    neuron = neuron_example.LIFNeuron(v_threshold=v_threshold, v_reset=v_reset, decay=decay)
    spikes = run_neuron(neuron, x, steps)
    expected = numpy_lif(x.reshape(steps, batch, 2, 5), v_threshold, v_reset, decay)
    assert spikes.shape == x.shape
    assert 0.1 < expected.mean() < 0.9  # the case exercises both firing and not firing
    np.testing.assert_array_equal(spikes.reshape(expected.shape), expected)


def test_lif_without_leak_is_the_builtin_if(neuron_example):
    steps = 16
    x = np.random.default_rng(1).uniform(0.0, 1.0, (steps * 4, 7)).astype(np.float32)
    spikes = run_neuron(neuron_example.LIFNeuron(decay=1.0), x, steps)
    np.testing.assert_array_equal(spikes, simulate_if(x.reshape(steps, 4, 7)).reshape(x.shape))


def test_lif_rejects_bad_decay(neuron_example):
    with pytest.raises(ValueError):
        neuron_example.LIFNeuron(decay=0.0)
    with pytest.raises(ValueError):
        neuron_example.LIFNeuron(decay=1.5)


def test_lif_scan_bodies_are_rank_only(neuron_example):
    function = neuron_example.lif_node_function(OPSET)
    (if_node,) = [n for n in function.node if n.op_type == "If"]
    for branch in if_node.attribute:
        (scan,) = branch.g.node
        body = scan.attribute[0].g
        for value in [*body.input, *body.output]:
            dims = value.type.tensor_type.shape.dim
            assert len(dims) == 1
            assert not dims[0].HasField("dim_param") and not dims[0].HasField("dim_value")


def _converted(pass_example, factory):
    """A small model converted with ``factory`` (calibrated on random images)."""
    ann = run_passes(pass_example.export(pass_example.torch_model()), pass_example.snn_friendly)
    return convert(ann, pass_example.make_data(64, seed=3), neuron_factory=factory,
                   progress=False)


def test_converted_model_uses_the_lif_function(neuron_example, pass_example):
    lif = neuron_example.LIFNeuron
    snn = _converted(pass_example, NeuronFactory(lif, decay=0.9))
    model = snn.model
    onnx.checker.check_model(model, full_check=True)
    neurons = [n for n in model.graph.node if n.domain == "my_neurons"]
    assert len(neurons) == 2 and all(n.op_type == "LIFNode" for n in neurons)
    for node in neurons:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == pytest.approx({"v_threshold": 1.0, "v_reset": 0.0, "decay": 0.9,
                                       "hard_reset": 0})
    assert [(f.domain, f.name) for f in model.functions] == [("my_neurons", "LIFNode")]
    assert not any(n.op_type == "Relu" for n in model.graph.node)


def test_threshold_from_scale_factory_matches_default(neuron_example, pass_example):
    lif = neuron_example.LIFNeuron
    default = _converted(pass_example, NeuronFactory(lif, decay=0.9))
    scaled = _converted(pass_example, neuron_example.ThresholdFromScaleFactory(lif, decay=0.9))
    assert [layer.neuron.v_threshold for layer in scaled.layers] == \
        [layer.scale for layer in scaled.layers]
    assert len({layer.neuron.v_threshold for layer in scaled.layers}) > 1
    x = pass_example.make_data(16, seed=4)
    mean_default = neuron_example.mean_outputs(default.model, x, 64)
    mean_scaled = neuron_example.mean_outputs(scaled.model, x, 64)
    # Mathematically equal; float rounding may flip a rare spike at the threshold.
    np.testing.assert_allclose(mean_scaled, mean_default, atol=0.02 * np.abs(mean_default).max())


def test_threshold_from_scale_scales_hard_reset(neuron_example):
    factory = neuron_example.ThresholdFromScaleFactory(neuron_example.LIFNeuron, v_reset=0.5,
                                                       decay=0.8)
    neuron = factory.create(4.0)
    assert neuron.attributes() == {"v_threshold": 4.0, "v_reset": 2.0, "decay": 0.8,
                                   "hard_reset": 1}


def test_digits_lif_accuracy(neuron_results):
    # Measured (seed 0, 15 epochs, 540 test digits): ANN 0.996; LIF at T=32:
    # 0.996 (decay 1), 0.996 (0.99), 0.987 (0.95). Bounds leave a few points of slack.
    lif = neuron_results["lif_accuracy"]
    assert neuron_results["ann_accuracy"] >= 0.95
    assert lif[1.0][32] >= neuron_results["ann_accuracy"] - 0.02
    assert lif[0.99][32] >= 0.95
    assert lif[0.95][32] >= 0.93
    for accuracy in lif.values():
        assert accuracy[32] > accuracy[4] + 0.3  # rate coding needs steps (T=4: ~0.32)
    # A leak only removes charge, so it can only delay spikes: never better by much.
    assert lif[0.95][16] <= lif[1.0][16] + 0.01


def test_digits_threshold_from_scale(neuron_results):
    scaled = neuron_results["scaled"]
    assert scaled["thresholds"] == scaled["scales"]
    assert scaled["max_abs_diff"] <= 0.05 * scaled["output_range"]
    assert scaled["same_predictions"] >= 0.98
    default = neuron_results["lif_accuracy"][scaled["decay"]]
    for steps, accuracy in scaled["accuracy"].items():
        assert abs(accuracy - default[steps]) <= 0.02


# --------------------------------------------------------------------------- custom pass

def test_pass_removes_every_maxpool_and_leaky_relu(pass_results):
    before, after = pass_results["ops_before"], pass_results["ops_after"]
    assert before["MaxPool"] == 2 and before["LeakyRelu"] == 1
    assert "MaxPool" not in after and "LeakyRelu" not in after
    assert after["AveragePool"] == before["MaxPool"]
    assert after["Relu"] == before["Relu"] + before["LeakyRelu"]
    assert pass_results["neurons"] == ["IFNode", "IFNode"]


def test_rewritten_ann_equals_torch_average_pool_twin(pass_results):
    # The twin has ReLU where the original has LeakyReLU, and AvgPool for MaxPool.
    assert pass_results["twin_max_abs_diff"] <= 1e-5
    assert pass_results["original_vs_rewritten_ann"] > 1e-3  # max vs average really differs


def test_snn_output_approaches_ann(pass_results):
    errors = pass_results["snn_mean_abs_error"]
    steps = sorted(errors)
    assert all(errors[a] > errors[b] for a, b in zip(steps, steps[1:]))
    # The quantisation error falls about as 1/T: measured 0.006 at T=8, 0.0001 at T=512.
    assert errors[steps[0]] > 10 * errors[steps[-1]]
    assert errors[steps[-1]] < 0.02 * pass_results["ann_mean_abs_output"]


def test_without_the_pass_leaky_relu_needs_signed_neurons(pass_example):
    """The original converts too: its LeakyRelu (static: it reads the first Conv) runs
    once, and the second Conv reads it through a signed neuron; then the ReLU's
    neuron. The pass leaves plain neurons only."""
    original = pass_example.export(pass_example.torch_model())
    converted = convert(original, pass_example.make_data(8, seed=5), progress=False)
    assert [layer.neuron.signed for layer in converted.layers] == [True, False]


def _single_op_model(node: onnx.NodeProto, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "single", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None) for out in node.output],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def test_maxpool_to_average_pool_keeps_windows_and_padding(pass_example):
    import torch

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 1, 1, 1], ceil_mode=1)
    rewritten = run_passes(_single_op_model(node),
                           pass_example.PatternPass(pass_example.MaxPoolToAveragePool()))
    (average,) = rewritten.graph.node
    assert average.op_type == "AveragePool"
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 9)).astype(np.float32)
    expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True,
                                              count_include_pad=False).numpy()
    np.testing.assert_allclose(pass_example.run_ann(rewritten, x), expected, atol=1e-6)


def test_patterns_leave_other_nodes_alone(pass_example):
    dilated = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
    with_indices = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])
    steep = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.3)
    for node in (dilated, with_indices, steep):
        model = run_passes(_single_op_model(node), pass_example.snn_friendly)
        assert [n.op_type for n in model.graph.node] == [node.op_type]
    slight = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.01)
    model = run_passes(_single_op_model(slight), pass_example.snn_friendly)
    assert [n.op_type for n in model.graph.node] == ["Relu"]


def test_example_pass_agrees_with_builtin_average_policy(pass_example):
    """The example's MaxPool -> AveragePool pass and convert(maxpool="avg") give the same SNN."""
    rewritten = run_passes(pass_example.export(pass_example.torch_model()),
                           pass_example.snn_friendly)
    leaky_free = run_passes(pass_example.export(pass_example.torch_model()),
                            pass_example.PatternPass(pass_example.LeakyReluToRelu()))
    x = pass_example.make_data(16, seed=3)
    by_example = convert(rewritten, x, progress=False)
    with pytest.warns(UserWarning, match="AveragePool"):
        by_policy = convert(leaky_free, x, maxpool="avg", progress=False)
    out_example = SpikingSession(by_example.model).run(x, 16).per_step
    out_policy = SpikingSession(by_policy.model).run(x, 16).per_step
    np.testing.assert_array_equal(out_example, out_policy)


# --------------------------------------------------------------------------- beyond ReLU (ViT)

VIT_EPOCHS = 12      # the example trains 30; 12 take about 2 s (ANN 88.5 %, SNN T=64 90.0 %)
VIT_SAMPLES = 200    # the first 200 test digits


@pytest.fixture(scope="module")
def vit_results() -> dict:
    example = load_example("beyond_relu")
    return example.main(epochs=VIT_EPOCHS, test_samples=VIT_SAMPLES, echo=lambda *_: None)


def vit_test_digits() -> tuple[np.ndarray, np.ndarray]:
    from onnx_snn.demo.digits import load_digits_split

    _, _, x_test, y_test = load_digits_split(seed=0)
    return x_test[:VIT_SAMPLES], y_test[:VIT_SAMPLES]


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def test_vit_snn_accuracy_approaches_the_ann(vit_results):
    x, y = vit_test_digits()
    session = ort.InferenceSession(vit_results["ann"].SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    ann = float((logits.argmax(axis=1) == y).mean())
    assert ann >= 0.8
    assert vit_results["ann_accuracy"] == pytest.approx(ann)
    snn = vit_results["snn_accuracy"]
    assert sorted(snn) == [1, 2, 4, 8, 16, 32, 64]
    assert abs(snn[64] - ann) <= 0.03
    assert snn[64] > snn[1] + 0.3   # rate coding needs steps (T=1: near chance)
    # The example's curve is the argmax of the summed outputs of its spiking model.
    per_step = SpikingSession(vit_results["snn"]).run(x, 64).per_step
    assert float((per_step.sum(axis=0).argmax(axis=1) == y).mean()) == pytest.approx(snn[64])


def downstream_of_neurons(model: onnx.ModelProto) -> set[str]:
    """The tensors that some IFNode's spikes reach, walking the graph forward."""
    reached = {n.output[0] for n in model.graph.node if n.op_type == "IFNode"}
    for node in model.graph.node:   # the graph is topologically sorted
        if reached & set(node.input):
            reached.update(node.output)
    return reached


def test_vit_nonlinear_ops_are_time_difference_ops(vit_results):
    """GELU, LayerNorm (all but the first, which reads only the input), Softmax and the
    two attention products are the ops the model lists as time-difference ops, and each
    reads values that spikes reach."""
    model = vit_results["snn"]
    props = {p.key: p.value for p in model.metadata_props}
    td_outputs = set(json.loads(props["onnx_snn.td_outputs"]))
    td = [n for n in model.graph.node if td_outputs & set(n.output)]
    assert sorted(n.op_type for n in td) == ["Gelu"] * 2 + ["LayerNormalization"] * 4 + \
        ["MatMul"] * 4 + ["Softmax"] * 2
    assert sum(e.action == "td" for e in vit_results["inspection"].ops) == len(td)
    spiking = downstream_of_neurons(model)
    assert all(spiking & set(n.input) for n in td)
    # The first LayerNorm runs once, on the embedded input, before any neuron.
    (analog,) = [n for n in model.graph.node if n.op_type == "LayerNormalization"
                 and n not in td]
    assert not spiking & set(analog.input)


def test_vit_every_linear_reads_signed_spikes(vit_results):
    model = vit_results["snn"]
    made_by = producers(model)
    initializers = {t.name for t in model.graph.initializer}
    neurons = [n for n in model.graph.node if n.op_type == "IFNode"]
    signed = [n for n in neurons if {a.name: helper.get_attribute_value(a)
                                     for a in n.attribute}.get("signed") == 1]
    assert neurons and signed == neurons   # no Relu in a ViT: every neuron is signed
    assert len(neurons) == sum(e.action == "signed" for e in vit_results["inspection"].ops)
    spikes = {n.output[0] for n in neurons}
    weighted = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                and n.input[1] in initializers]
    assert len(weighted) == 13   # q, k, v, out and two MLP Linears per block, and the head
    for layer in weighted:
        source = made_by[layer.input[0]]
        if source.op_type == "Mul":   # the spikes times the neuron's scale
            source = made_by[source.input[0]]
        assert source.output[0] in spikes, layer.name
