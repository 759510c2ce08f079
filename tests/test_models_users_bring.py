"""Models whose own names and structure once broke the conversion silently: names that
look like the ones onnx-snn generates, control flow before the neurons, a label output
computed from scores, MaxPools already moved in front of a neuron.

The answer each one is checked against is the ANN itself, run in onnxruntime: with
Max calibration on the evaluated data the SNN's time-averaged output is within one
spike per neuron of it (the error falls as 1/T).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model, mlp_model
from onnx import TensorProto, helper

from onnx_snn import convert
from onnx_snn.cli import main
from onnx_snn.export.formats import FORMATS
from onnx_snn.io.metadata import TIMESTEPS_KEY
from onnx_snn.runtime.streaming import open_session

SIZES = [8, 16, 16, 4]


def x_data(rows: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, SIZES[0])).astype(np.float32)


def ann_output(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def rename(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    """Rename tensor ``old`` (inputs, outputs, node inputs and outputs)."""
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    onnx.checker.check_model(model)
    return model


def generated_looking_names() -> onnx.ModelProto:
    """The MLP with a Gemm node called like relu0's output scaler and tensors called like
    relu0's scaled input and spikes."""
    model = mlp_model(SIZES, seed=2)
    model.graph.node[2].name = "relu0__output_scaler"  # fc1
    rename(model, "h1", "relu0__scaled")
    return rename(model, "r1", "relu0__spikes")


NAMED = {
    "input-named-timesteps": lambda: rename(mlp_model(SIZES, seed=2), "x", "timesteps"),
    "tensor-named-timesteps": lambda: rename(mlp_model(SIZES, seed=2), "h0", "timesteps"),
    "generated-looking-names": generated_looking_names,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(NAMED))
def test_names_like_generated_ones_convert_into_valid_models(name, fmt) -> None:
    """Each used to convert with exit 0 into a model onnxruntime could not load or run."""
    ann, x = NAMED[name](), x_data()
    snn = convert(ann, x, format=fmt, progress=False).model
    if fmt != "streaming":
        onnx.checker.check_model(snn, full_check=fmt == "standard")
    session = open_session(snn)
    input_name = ann.graph.input[0].name
    result = session.run({input_name: x}, 256)
    expected = ann_output(ann, x)
    scale = max(float(np.abs(expected).max()), 1e-6)
    assert np.abs(result.mean - expected).max() / scale < 0.05


def test_a_model_input_named_timesteps_moves_t_aside() -> None:
    snn = convert(NAMED["input-named-timesteps"](), x_data(), progress=False).model
    props = {p.key: p.value for p in snn.metadata_props}
    assert props[TIMESTEPS_KEY] == "timesteps_1"
    assert [i.name for i in snn.graph.input] == ["timesteps", "timesteps_1"]


def test_control_flow_before_the_first_neuron_converts() -> None:
    """A Loop that runs on the input (before any neuron) runs once, on analog values."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["v", "two"], ["v_out"]),
         helper.make_node("Relu", ["v_out"], ["v_relu_unused"])], "double",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    rng = np.random.default_rng(3)
    ann = make_model(
        [helper.make_node("Loop", ["trips", "go", "x"], ["x2"], name="twice", body=body),
         helper.make_node("Gemm", ["x2", "w", "b"], ["h"], name="fc0"),
         helper.make_node("Relu", ["h"], ["r"], name="relu0"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc1")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        {"trips": np.array(2, np.int64), "go": np.array(True),
         "two": np.array(2.0, np.float32),
         "w": rng.normal(size=(8, 16)).astype(np.float32) / 8,
         "b": np.full(16, 0.1, np.float32), "w2": rng.normal(size=(16, 4)).astype(np.float32),
         "b2": np.zeros(4, np.float32)})
    x = x_data()
    snn = convert(ann, x, progress=False).model
    result = open_session(snn).run(x, 256)
    expected = ann_output(ann, x)
    assert np.abs(result.mean - expected).max() / np.abs(expected).max() < 0.05


def test_inspect_does_not_warn_about_a_maxpool_moved_before_its_neuron(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["y"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2])]
    ann = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           ["N", 2, 4, 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2, 2])],
                     {"w1": rng.normal(size=(3, 2, 3, 3)).astype(np.float32),
                      "w2": rng.normal(size=(3, 3, 3, 3)).astype(np.float32)})
    onnx.save(ann, tmp_path / "ann.onnx")
    assert main(["inspect", str(tmp_path / "ann.onnx")]) == 0
    assert "MaxPool      pool  follows spiking neurons" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "ann.onnx"), "--maxpool", "before"]) == 0
    assert "caveats" not in capsys.readouterr().out


def test_eval_scores_a_scikit_learn_classifier_as_scikit_learn_does(tmp_path, capsys) -> None:
    """eval used to score the integer 'label' output's argmax (0.10). The ANN accuracy is
    now sklearn's own score, exactly; asked for explicitly, the label output gives the
    same ANN accuracy and an SNN accuracy from the labels of the summed scores."""
    pytest.importorskip("skl2onnx")
    from pattern_models import digits_classifier, sklearn_onnx

    clf, x_train, _, x_test, y_test = digits_classifier()
    onnx.save(sklearn_onnx(False), tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x_train)
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    assert main(["convert", str(tmp_path / "ann.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "snn.onnx"), "--no-progress"]) == 0
    reference = clf.score(x_test, y_test)
    for output in ([], ["--output", "label"], ["--output", "probabilities"]):
        assert main(["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                     "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "64",
                     "--json", str(tmp_path / "r.json"), *output]) == 0
        result = json.loads((tmp_path / "r.json").read_text())
        assert result["ann_accuracy"] == reference, output
        assert result["output"] == (output[1] if output else "probabilities")
        assert result["snn_accuracy"]["64"] > reference - 0.15
