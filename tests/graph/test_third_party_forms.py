"""Graph forms found in third-party pretrained models (ddddocr's OCR net, swift-f0's
pitch net), reduced to a few nodes: each converts, the written model loads in plain
onnxruntime, and the SNN's mean output approaches the ANN's, run in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h

from onnx_snn import convert
from onnx_snn.calibration.factories import HookFactory
from onnx_snn.runtime import SpikingSession

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 4)).astype(np.float32)
W = h.make_tensor("w", TP.FLOAT, [4, 4], RNG.normal(size=16).astype(np.float32))


def model(nodes, outputs, initializers=()) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TP.FLOAT, ["N", 4])],
                         outputs, [W, *initializers])
    ann = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(ann)
    return ann


def ann_outputs(ann: onnx.ModelProto) -> list[np.ndarray]:
    session = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})


def plain_load(snn: onnx.ModelProto) -> None:
    """The model loads in onnxruntime with no custom op library (function bodies)."""
    ort.InferenceSession(snn.SerializeToString(), providers=["CPUExecutionProvider"])


def mean_errors(snn: onnx.ModelProto, expected: np.ndarray, name: str,
                steps=(16, 512)) -> list[float]:
    per_step = SpikingSession(snn).run({"x": X}, max(steps)).outputs[name]
    return [float(np.abs(per_step[:t].mean(axis=0) - expected).max() / np.abs(expected).max())
            for t in steps]


def test_a_time_difference_op_with_several_outputs_gets_fresh_names() -> None:
    """LayerNormalization (like an LSTM) has several float outputs; each differenced
    output needs a name of its own (ddddocr: 'Duplicate definition of name')."""
    ann = model([h.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
                 h.make_node("Relu", ["a"], ["r"], name="relu"),
                 h.make_node("LayerNormalization", ["r", "s", "b"], ["y", "mean", "istd"],
                             name="ln", axis=-1)],
                [h.make_tensor_value_info("y", TP.FLOAT, ["N", 4])],
                [h.make_tensor("s", TP.FLOAT, [4], np.ones(4, np.float32)),
                 h.make_tensor("b", TP.FLOAT, [4], np.zeros(4, np.float32))])
    snn = convert(ann, X, hook_factory=HookFactory("max"), progress=False).model
    plain_load(snn)
    errors = mean_errors(snn, ann_outputs(ann)[0], "y")
    assert errors[1] < errors[0] and errors[1] < 0.05, errors


def test_an_integer_clip_on_an_index_path_is_left_alone() -> None:
    """An int64 Clip(0, 2) after an ArgMax is no activation (swift-f0 was refused:
    "Relu 'Clip_349' computes in int64"); only the float Relu becomes a neuron."""
    ann = model([h.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
                 h.make_node("Relu", ["a"], ["r"], name="relu"),
                 h.make_node("MatMul", ["r", "w"], ["scores"], name="mm2"),
                 h.make_node("ArgMax", ["scores"], ["idx"], name="argmax", axis=1, keepdims=0),
                 h.make_node("Clip", ["idx", "lo", "hi"], ["label"], name="clip")],
                [h.make_tensor_value_info("scores", TP.FLOAT, ["N", 4]),
                 h.make_tensor_value_info("label", TP.INT64, ["N"])],
                [h.make_tensor("lo", TP.INT64, [], [0]), h.make_tensor("hi", TP.INT64, [], [2])])
    converted = convert(ann, X, hook_factory=HookFactory("max"), progress=False)
    assert [layer.node for layer in converted.layers] == ["relu"]
    plain_load(converted.model)
    scores, _ = ann_outputs(ann)
    errors = mean_errors(converted.model, scores, "scores")
    assert errors[1] < errors[0] and errors[1] < 0.05, errors
    labels = SpikingSession(converted.model).run({"x": X}, 512).outputs["label"][-1]
    summed = SpikingSession(converted.model).run({"x": X}, 512).outputs["scores"].sum(axis=0)
    np.testing.assert_array_equal(labels, np.clip(summed.argmax(axis=1), 0, 2))


def test_a_time_difference_op_on_float64_values() -> None:
    """A Softmax after a Cast to double (swift-f0's pitch head runs in float64): the time
    ops compute in float32, so the value goes through them cast (it was INVALID_GRAPH)."""
    ann = model([h.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
                 h.make_node("Relu", ["a"], ["r"], name="relu"),
                 h.make_node("MatMul", ["r", "w"], ["s"], name="mm2"),
                 h.make_node("Cast", ["s"], ["s64"], name="cast", to=TP.DOUBLE),
                 h.make_node("Softmax", ["s64"], ["p"], name="softmax", axis=-1),
                 h.make_node("Mul", ["p", "p"], ["y"], name="square")],
                [h.make_tensor_value_info("y", TP.DOUBLE, ["N", 4])])
    snn = convert(ann, X, hook_factory=HookFactory("max"), progress=False).model
    plain_load(snn)
    errors = mean_errors(snn, ann_outputs(ann)[0], "y")
    assert errors[1] < errors[0] and errors[1] < 0.05, errors


def paddle_style_model() -> onnx.ModelProto:
    """As paddle2onnx writes a classifier: weights as Constant nodes, Conv then a separate
    BatchNormalization, and a flatten whose target is computed from the Shape through
    Casts (which onnx's shape inference does not see through)."""
    rng = np.random.default_rng(5)

    def constant(name: str, values: np.ndarray) -> onnx.NodeProto:
        return h.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(
            np.asarray(values), name))

    nodes = [constant("w", rng.normal(size=(6, 3, 3, 3)).astype(np.float32) / 4),
             constant("gamma", rng.uniform(0.5, 1.5, 6).astype(np.float32)),
             constant("beta", rng.normal(size=6).astype(np.float32) * 0.1 + 0.2),
             constant("mean", rng.normal(size=6).astype(np.float32) * 0.1),
             constant("var", rng.uniform(0.5, 1.5, 6).astype(np.float32)),
             constant("fc", rng.normal(size=(6, 3)).astype(np.float32)),
             constant("start", np.array([0], np.int32)), constant("end", np.array([1], np.int32)),
             constant("rest", np.array([-1], np.int64)),
             h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"],
                         name="bn"),
             h.make_node("Relu", ["b"], ["r"], name="relu"),
             h.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             h.make_node("Shape", ["p"], ["shape"], name="shape"),
             h.make_node("Cast", ["shape"], ["shape32"], name="cast32", to=TP.INT32),
             h.make_node("Slice", ["shape32", "start", "end"], ["batch32"], name="slice"),
             h.make_node("Cast", ["batch32"], ["batch"], name="cast64", to=TP.INT64),
             h.make_node("Concat", ["batch", "rest"], ["target"], name="concat", axis=-1),
             h.make_node("Reshape", ["p", "target"], ["flat"], name="flatten"),
             h.make_node("Relu", ["flat"], ["flat_r"], name="relu_flat"),
             h.make_node("MatMul", ["flat_r", "fc"], ["y"], name="head")]
    graph = h.make_graph(nodes, "paddle", [h.make_tensor_value_info("x", TP.FLOAT, [-1, 3, 6, 6])],
                         [h.make_tensor_value_info("y", TP.FLOAT, [-1, 3])])
    ann = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    onnx.checker.check_model(ann)
    return ann


def test_a_paddle_style_graph_folds_its_constants_and_converts_per_channel() -> None:
    ann = paddle_style_model()
    x = np.random.default_rng(6).random((24, 3, 6, 6)).astype(np.float32)
    converted = convert(ann, {"x": x}, hook_factory=HookFactory("max", per_channel=True),
                        batch_size=24, progress=False)
    ops = [node.op_type for node in converted.model.graph.node]
    assert "BatchNormalization" not in ops and "Constant" not in ops  # folded into the Conv
    assert [np.shape(layer.scale) for layer in converted.layers] == [(6,), (6,)]
    plain_load(converted.model)
    expected = ort.InferenceSession(ann.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    per_step = SpikingSession(converted.model).run({"x": x}, 512).outputs["y"]
    errors = [float(np.abs(per_step[:t].mean(axis=0) - expected).max() / np.abs(expected).max())
              for t in (16, 512)]
    assert errors[1] < errors[0] and errors[1] < 0.02, errors
