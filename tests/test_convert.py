"""End-to-end conversion: rate coding converges to the ANN, the model is portable."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model, mlp_model
from onnx import TensorProto, helper

from onnx_snn import HookFactory, NeuronFactory, OnnxSnnError, convert
from onnx_snn.io.metadata import OUTPUT_SCALES
from onnx_snn.ops.function_bodies import IF_ATTRIBUTES
from onnx_snn.ops.time_ops import TIME_OPS
from onnx_snn.runtime import SpikingSession, run_snn


def ann_outputs(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def cnn_model(seed: int, channels: int = 6) -> onnx.ModelProto:
    """Conv-Relu-AvgPool-Conv-Relu-Flatten-Gemm on [N, 2, 8, 8] with random weights."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = {
        "w1": (rng.normal(size=(c, 2, 3, 3)) / 4).astype(np.float32),
        "b1": (rng.normal(size=c) * 0.1 + 0.1).astype(np.float32),
        "w2": (rng.normal(size=(c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32),
        "b2": (rng.normal(size=c) * 0.1 + 0.1).astype(np.float32),
        "w3": (rng.normal(size=(c * 16, 5)) / np.sqrt(c * 16)).astype(np.float32),
        "b3": np.zeros(5, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc"),
    ]
    return make_model(nodes,
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)


def mean_error(snn: onnx.ModelProto, ann: onnx.ModelProto, x: np.ndarray, steps: int) -> float:
    _, mean = run_snn(snn, x, steps)
    return float(np.abs(mean - ann_outputs(ann, {"x": x})).max())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_mean_output_converges_to_ann(kind, seed) -> None:
    """Property: with Max calibration on the evaluated data, the time-averaged SNN
    output approaches the ANN output as T grows (error ~ 1/T with soft reset; hard
    reset discards the surplus charge and is biased, so it is not expected to)."""
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        ann = mlp_model([12, int(rng.integers(8, 24)), int(rng.integers(8, 24)), 4], seed=seed)
        x = rng.normal(size=(40, 12)).astype(np.float32)
    else:
        ann = cnn_model(seed)
        x = rng.random(size=(20, 2, 8, 8)).astype(np.float32)
    snn = convert(ann, x, progress=False).model
    scale = float(np.abs(ann_outputs(ann, {"x": x})).max())
    errors = [mean_error(snn, ann, x, steps) for steps in (16, 128, 1024)]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.02 * scale


def test_converted_model_is_portable(tmp_path) -> None:
    """Full checker passes; plain onnxruntime with nothing registered runs it."""
    ann = cnn_model(0)
    x = np.random.default_rng(0).random((8, 2, 8, 8)).astype(np.float32)
    result = convert(ann, x, progress=False)
    onnx.checker.check_model(result.model, full_check=True)
    path = result.save(tmp_path / "snn.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "timesteps"]
    (out,) = session.run(None, {"x": x[None], "timesteps": np.array(5, np.int64)})
    assert out.shape == (5, 8, 5)
    neurons = [n for n in result.model.graph.node if n.op_type == "IFNode"]
    assert [n.name for n in neurons] == ["relu1", "relu2"]
    assert all({a.name for a in n.attribute} == set(IF_ATTRIBUTES) for n in neurons)
    assert not [n for n in result.model.graph.node if n.op_type == "Relu"]


def test_the_first_neuron_reads_the_static_input_once() -> None:
    """Direct encoding: the first neuron takes [S, N, ...] (no T-fold copy); later ones
    [T·N, ...]. A sequence input (S = T) runs through the same model, step by step."""
    ann = cnn_model(0)
    x = np.random.default_rng(0).random((6, 2, 8, 8)).astype(np.float32)
    model = convert(ann, x, progress=False).model
    first, second = [n for n in model.graph.node if n.op_type == "IFNode"]
    flag = {n.name: helper.get_attribute_value(next(a for a in n.attribute
                                                    if a.name == "broadcast_input"))
            for n in (first, second)}
    assert flag == {"relu1": 1, "relu2": 0}
    session = SpikingSession(model)
    direct = session.run(x, timesteps=5).per_step
    repeated = session.run(np.broadcast_to(x, (5, *x.shape)), sequence=True).per_step
    np.testing.assert_array_equal(direct, repeated)


def test_scalers_use_threshold_over_scale() -> None:
    ann = mlp_model([6, 8, 3])
    x = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    result = convert(ann, x, neuron_factory=NeuronFactory(v_threshold=0.5), progress=False)
    (layer,) = result.layers
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert inits["relu0__input_gain"] == np.float32(0.5 / layer.scale)
    # The output scale s is folded into the next layer's weight, and kept in the metadata.
    w1 = onnx.numpy_helper.to_array(ann.graph.initializer[2])
    np.testing.assert_array_equal(inits["w1"], w1 * np.float32(layer.scale))
    metadata = {p.key: p.value for p in result.model.metadata_props}
    assert json.loads(metadata[OUTPUT_SCALES]) == {"relu0": np.float32(layer.scale).item()}
    hidden = np.maximum(x @ onnx.numpy_helper.to_array(ann.graph.initializer[0])
                        + onnx.numpy_helper.to_array(ann.graph.initializer[1]), 0)
    assert layer.scale == pytest.approx(float(hidden[:100].max()))


def test_time_steps_chosen_at_run_time_and_causal() -> None:
    ann = mlp_model([10, 16, 3])
    x = np.random.default_rng(1).normal(size=(5, 10)).astype(np.float32)
    session = SpikingSession(convert(ann, x, progress=False).model)
    short, long = session.run(x, 3), session.run(x, 11)
    assert short.per_step.shape == (3, 5, 3) and long.per_step.shape == (11, 5, 3)
    np.testing.assert_array_equal(short.per_step, long.per_step[:3])
    np.testing.assert_allclose(long.mean, long.per_step.mean(axis=0))
    assert long.predictions().shape == (11, 5)
    with pytest.raises(OnnxSnnError, match="positive integer"):
        session.run(x, 0)


def test_sequence_input_equals_direct_encoding_when_repeated() -> None:
    ann = cnn_model(1)
    x = np.random.default_rng(2).random((3, 2, 8, 8)).astype(np.float32)
    session = SpikingSession(convert(ann, x, progress=False).model)
    direct = session.run(x, 6).per_step
    sequence = session.run(np.repeat(x[None], 6, axis=0), sequence=True).per_step
    np.testing.assert_array_equal(direct, sequence)
    varying = session.run(np.stack([x * (t % 2) for t in range(6)]), sequence=True).per_step
    assert not np.array_equal(varying, direct)


def test_layers_before_first_neuron_run_once() -> None:
    """Direct encoding: conv1 reads the input (N samples), and the first neuron reads its
    scaled output as [S, N, ...], with no copy over time."""
    snn = convert(cnn_model(0), np.ones((2, 2, 8, 8), np.float32), progress=False).model
    producers = {out: node for node in snn.graph.node for out in node.output}
    conv1 = next(n for n in snn.graph.node if n.name == "conv1")
    input_fold = producers[conv1.input[0]]
    assert input_fold.op_type == "Reshape" and input_fold.input[0] == "x"
    assert not [n for n in snn.graph.node if n.op_type in ("Expand", "Tile")]
    relu1 = next(n for n in snn.graph.node if n.name == "relu1")
    split = producers[relu1.input[0]]  # Reshape [S*N, ...] -> [S, N, ...]
    assert split.op_type == "Reshape"
    assert producers[split.input[0]].name == "relu1__input_scaler"


def test_shape_computed_from_static_tensor_is_retimed() -> None:
    """A Reshape after a neuron whose target shape comes from Shape(input) must see T*N."""
    rng = np.random.default_rng(3)
    inits = {"w": rng.normal(size=(3, 2)).astype(np.float32),
             "zero": np.array([0], np.int64), "rest": np.array([-1], np.int64),
             "w2": rng.normal(size=(8, 2)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),  # [N, 4, 3] @ [3, 2] -> [N, 4, 2]
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w2"], ["y"]),
    ]
    ann = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    x = rng.normal(size=(5, 4, 3)).astype(np.float32)
    snn = convert(ann, x, progress=False).model
    assert mean_error(snn, ann, x, 1024) < 0.02 * np.abs(ann_outputs(ann, {"x": x})).max()


def test_two_inputs_and_two_outputs() -> None:
    rng = np.random.default_rng(4)
    inits = {"wa": rng.normal(size=(3, 6)).astype(np.float32),
             "wb": rng.normal(size=(5, 6)).astype(np.float32),
             "wo": rng.normal(size=(6, 2)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["a", "wa"], ["ha"]),
        helper.make_node("MatMul", ["b", "wb"], ["hb"]),
        helper.make_node("Add", ["ha", "hb"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "wo"], ["y"]),
        helper.make_node("Neg", ["ha"], ["aux"]),
    ]
    ann = make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
                             helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 5])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
                      helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", 6])], inits)
    feed = {"a": rng.normal(size=(7, 3)).astype(np.float32),
            "b": rng.normal(size=(7, 5)).astype(np.float32)}
    snn = convert(ann, [feed], progress=False).model
    result = SpikingSession(snn).run(feed, 512)
    expected_y, expected_aux = ort.InferenceSession(ann.SerializeToString()).run(None, feed)
    assert result.outputs["aux"].shape == (512, 7, 6)
    np.testing.assert_allclose(result.outputs["aux"][0], expected_aux, rtol=1e-6)
    np.testing.assert_allclose(result.outputs["aux"][-1], expected_aux, rtol=1e-6)
    assert np.abs(result.outputs["y"].mean(0) - expected_y).max() < 0.03 * np.abs(expected_y).max()


def activation_model(ops: list[str], softmax_output: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    nodes, current = [], "x"
    inits = {}
    for i, op in enumerate(ops):
        inits[f"w{i}"] = np.abs(rng.normal(size=(4, 4))).astype(np.float32)
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node(op, [f"m{i}"], [f"a{i}"], name=f"{op.lower()}{i}"))
        current = f"a{i}"
    if softmax_output:
        nodes.append(helper.make_node("Softmax", [current], ["y"], name="softmax", axis=-1))
    else:
        nodes.append(helper.make_node("Identity", [current], ["y"]))
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)


def test_nonlinear_activations_become_time_difference_ops() -> None:
    """Sigmoid and Tanh between weighted layers: each becomes a time-difference op and
    the MatMul after it reads a signed neuron; the SNN's mean output approaches the
    ANN's (onnxruntime on the ANN) as T grows."""
    ann = activation_model(["Relu", "Sigmoid", "Relu", "Tanh"])
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    result = convert(ann, x, progress=False)
    signed = [layer.node for layer in result.layers if layer.neuron.signed]
    assert signed == ["a1__signed_neuron"]  # the Tanh feeds the output, no weighted layer
    expected = ann_outputs(ann, {"x": x})
    errors = [np.abs(run_snn(result.model, x, t)[0].mean(axis=0) - expected).max()
              for t in (16, 128, 1024)]
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.01 * np.abs(expected).max()


def test_keep_analog_runs_nonlinear_ops_step_by_step() -> None:
    ann = activation_model(["Relu", "Sigmoid", "Relu", "Tanh"])
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="analog"):
        result = convert(ann, x, keep_analog=True, progress=False)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("IFNode") == 2 and "Sigmoid" in ops and "Tanh" in ops
    assert not set(TIME_OPS) & set(ops) and not any(layer.neuron.signed
                                                     for layer in result.layers)


def test_softmax_at_the_output_averages_to_the_ann_softmax() -> None:
    """A time-difference Softmax: each step's outputs still sum to 1, and their mean
    over steps 1..t is the softmax of the mean logits, so it approaches the ANN's."""
    ann = activation_model(["Relu"], softmax_output=True)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    per_step, _ = run_snn(convert(ann, x, progress=False).model, x, 256)
    np.testing.assert_allclose(per_step.sum(axis=-1), 1.0, atol=1e-4)
    expected = ann_outputs(ann, {"x": x})
    assert np.abs(per_step.mean(axis=0) - expected).max() < 0.01
    with pytest.warns(UserWarning, match="drop_output_softmax=True"):
        per_step, _ = run_snn(convert(ann, x, keep_analog=True, progress=False).model, x, 4)
    assert per_step.min() >= 0 and np.allclose(per_step.sum(axis=-1), 1.0, rtol=1e-5)


def test_exclude_and_per_node_factories() -> None:
    ann = mlp_model([6, 8, 8, 3])
    x = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    kept = convert(ann, x, exclude=["relu0"], progress=False)
    ops = {n.name: n.op_type for n in kept.model.graph.node}
    assert ops["relu0"] == "Relu" and ops["relu1"] == "IFNode"
    assert [layer.node for layer in kept.layers] == ["relu1"]
    with pytest.raises(OnnxSnnError, match="'nope'"):
        convert(ann, x, exclude=["nope"], progress=False)

    def choose(node):
        if node.name == "relu1":
            return HookFactory("50%"), NeuronFactory(v_threshold=2.0, v_reset=0.0)
        return HookFactory("max"), NeuronFactory()

    mixed = convert(ann, x, factories=choose, progress=False)
    attrs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute}
             for n in mixed.model.graph.node if n.op_type == "IFNode"}
    assert attrs["relu0"]["hard_reset"] == 0 and attrs["relu1"]["hard_reset"] == 1
    assert attrs["relu1"]["v_threshold"] == 2.0
    modes = {layer.node: layer.mode for layer in mixed.calibration.layers}
    assert modes == {"relu0": "max", "relu1": "50%"}
    with pytest.raises(OnnxSnnError, match="every Relu is excluded"):
        convert(ann, x, factories=lambda node: None, progress=False)


def test_model_without_relu_is_refused() -> None:
    ann = activation_model(["Sigmoid"])
    with pytest.raises(OnnxSnnError, match="no Relu"), pytest.warns(UserWarning, match="analog"):
        convert(ann, np.zeros((2, 4), np.float32), keep_analog=True, progress=False)


def test_old_opset_model_converts() -> None:
    ann = mlp_model([5, 7, 2], opset=9)
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    snn = convert(ann, x, progress=False).model
    onnx.checker.check_model(snn, full_check=True)
    assert mean_error(snn, mlp_model([5, 7, 2]), x, 1024) < 0.02


def test_torch_dynamo_export_with_external_data_loads_from_path(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from onnx_snn.export.torch import export_torch

    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    path = tmp_path / "model.onnx"
    export_torch(net, torch.zeros(2, 6), path, dynamo=True)
    assert (tmp_path / "model.onnx.data").exists()
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    snn = convert(path, x, progress=False).model
    _, mean = run_snn(snn, x, 512)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(mean - expected).max() < 0.05 * np.abs(expected).max()


def test_float64_network_is_refused_clearly() -> None:
    ann = mlp_model([4, 6, 2])
    ann = onnx.helper.make_model(ann.graph, opset_imports=ann.opset_import)
    for tensor in ann.graph.initializer:
        tensor.CopyFrom(onnx.numpy_helper.from_array(
            onnx.numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
    for value in [*ann.graph.input, *ann.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(OnnxSnnError, match="relu0.*float64"):
        convert(ann, np.zeros((3, 4)), progress=False)


def test_optional_spike_count_outputs_count_the_spikes() -> None:
    """spike_counts=True adds <layer>__spike_count [N]; it equals the spikes of that
    layer, recovered from its scaled output (s·spikes) on a one-layer model."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    ann = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    x = np.array([[0.25, 0.5, 1.0], [1.0, 0.0, 0.75]], np.float32)
    result = convert(ann, x, spike_counts=True, progress=False)
    outputs = SpikingSession(result.model).run(x, 8).outputs
    assert list(outputs) == ["y", "relu__spike_count"]
    spikes = outputs["y"] / result.layers[0].scale  # scale 1: y is the spike train
    np.testing.assert_array_equal(outputs["relu__spike_count"], spikes.sum(axis=(0, 2)))
    np.testing.assert_array_equal(outputs["relu__spike_count"], [2 + 4 + 8, 8 + 0 + 6])
