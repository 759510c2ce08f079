"""Graph preparation (onnx_snn.graph.prepare): every rewrite keeps the model's outputs, checked
in onnxruntime against the unprepared model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_snn.graph.prepare import ai_onnx_opset, prepare

RNG_SEED = 0


# --------------------------------------------------------------------------- helpers

def const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def value(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def make_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto],
               opset: int = 13) -> onnx.ModelProto:
    """A checked model at ai.onnx ``opset``."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 13 else 4
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All graph outputs by name, with graph optimisations off (the model as written)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [out.name for out in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def assert_same_outputs(original: onnx.ModelProto, prepared: onnx.ModelProto,
                        feeds: dict[str, np.ndarray]) -> None:
    """Same output names, same values (rtol 1e-5)."""
    expected, got = run(original, feeds), run(prepared, feeds)
    assert list(got) == list(expected)
    for name, array in expected.items():
        np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-6, err_msg=name)


def batch_norm(name: str, channels: int, rng: np.random.Generator,
               epsilon: float = 1e-3) -> tuple[list[str], list[onnx.TensorProto], dict]:
    """BatchNormalization inputs (beside the data), their initializers, and attributes."""
    params = {"scale": rng.uniform(0.5, 2.0, channels), "bias": rng.standard_normal(channels),
              "mean": rng.standard_normal(channels), "var": rng.uniform(0.1, 3.0, channels)}
    names = [f"{name}_{key}" for key in params]
    return names, [const(n, v) for n, v in zip(names, params.values())], {"epsilon": epsilon}


def conv_bn_model(with_bias: bool, opset: int = 13) -> onnx.ModelProto:
    """x [N, 3, 6, 6] -> Conv -> BatchNormalization -> Relu -> y."""
    rng = np.random.default_rng(RNG_SEED)
    bn_inputs, bn_inits, bn_attrs = batch_norm("bn", 4, rng)
    inits = [const("w", rng.standard_normal((4, 3, 3, 3)))] + bn_inits
    conv_inputs = ["x", "w"]
    if with_bias:
        inits.append(const("b", rng.standard_normal(4)))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", *bn_inputs], ["n"], name="bn",
                              **bn_attrs),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    return make_model(nodes, [value("x", "N", 3, 6, 6)], [value("y", "N", 4, 6, 6)], inits,
                      opset)


def gemm_bn_model(trans_b: int, alpha: float, beta: float, bias_shape: tuple[int, ...] | None
                  ) -> onnx.ModelProto:
    """x [N, 5] -> Gemm -> BatchNormalization -> Relu -> y [N, 3]."""
    rng = np.random.default_rng(RNG_SEED + 1)
    bn_inputs, bn_inits, bn_attrs = batch_norm("bn", 3, rng)
    weight = rng.standard_normal((3, 5) if trans_b else (5, 3))
    inits = [const("w", weight)] + bn_inits
    gemm_inputs = ["x", "w"]
    if bias_shape is not None:
        inits.append(const("b", rng.standard_normal(bias_shape)))
        gemm_inputs.append("b")
    nodes = [helper.make_node("Gemm", gemm_inputs, ["g"], name="gemm", transB=trans_b,
                              alpha=alpha, beta=beta),
             helper.make_node("BatchNormalization", ["g", *bn_inputs], ["n"], name="bn",
                              **bn_attrs),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    return make_model(nodes, [value("x", "N", 5)], [value("y", "N", 3)], inits)


def inputs(*shape: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- BatchNormalization

@pytest.mark.parametrize("with_bias", [True, False])
def test_batch_norm_folded_into_conv(with_bias: bool) -> None:
    model = conv_bn_model(with_bias)
    prepared = prepare(model)
    assert op_types(prepared) == ["Conv", "Relu"]
    assert_same_outputs(model, prepared, {"x": inputs(4, 3, 6, 6)})


@pytest.mark.parametrize("bias_shape", [(3,), (1,), None], ids=["bias", "scalar_bias", "no_bias"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.7, 1.3)])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_batch_norm_folded_into_gemm(trans_b: int, alpha: float, beta: float,
                                     bias_shape: tuple[int, ...] | None) -> None:
    model = gemm_bn_model(trans_b, alpha, beta, bias_shape)
    prepared = prepare(model)
    assert op_types(prepared) == ["Gemm", "Relu"]
    assert_same_outputs(model, prepared, {"x": inputs(6, 5)})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batch_norm_folded_into_gemm_with_row_bias(trans_b: int) -> None:
    """A bias C of shape (1, N) (valid ONNX, unidirectional broadcast) folds like (N,)."""
    model = gemm_bn_model(trans_b, 1.0, 1.0, (1, 3))
    prepared = prepare(model)
    assert "BatchNormalization" not in op_types(prepared)
    assert_same_outputs(model, prepared, {"x": inputs(6, 5)})


def test_batch_norm_kept_when_conv_output_is_shared() -> None:
    """The Conv output also feeds another node: folding would change it, so BN stays."""
    model = conv_bn_model(True)
    model.graph.output.append(value("c", "N", 4, 6, 6))
    prepared = prepare(model)
    assert "BatchNormalization" in op_types(prepared)
    assert_same_outputs(model, prepared, {"x": inputs(2, 3, 6, 6)})


# --------------------------------------------------------------------------- pass-through ops

def passthrough_model() -> onnx.ModelProto:
    """Identity on the input, Dropout (mask unused) and Identity chain to the graph output."""
    rng = np.random.default_rng(RNG_SEED + 2)
    nodes = [helper.make_node("Identity", ["x"], ["x_id"], name="id_in"),
             helper.make_node("MatMul", ["x_id", "w"], ["h"], name="mm"),
             helper.make_node("Dropout", ["h"], ["d", "mask"], name="drop"),
             helper.make_node("Relu", ["d"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["r_id"], name="id_mid"),
             helper.make_node("Dropout", ["r_id"], ["r_drop"], name="drop2"),
             helper.make_node("Identity", ["r_drop"], ["y"], name="id_out")]
    return make_model(nodes, [value("x", "N", 4)], [value("y", "N", 3)],
                      [const("w", rng.standard_normal((4, 3)))])


def test_dropout_and_identity_dropped() -> None:
    model = passthrough_model()
    prepared = prepare(model)
    assert op_types(prepared) == ["MatMul", "Relu"]
    assert [out.name for out in prepared.graph.output] == ["y"]
    assert [inp.name for inp in prepared.graph.input] == ["x"]
    assert_same_outputs(model, prepared, {"x": inputs(5, 4)})


def test_identity_producing_output_with_other_consumers() -> None:
    """Identity -> graph output 'y' while its input also feeds a second output."""
    rng = np.random.default_rng(RNG_SEED + 3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["y"], name="id_out"),
             helper.make_node("Neg", ["r"], ["z"], name="neg")]
    model = make_model(nodes, [value("x", "N", 4)], [value("y", "N", 3), value("z", "N", 3)],
                       [const("w", rng.standard_normal((4, 3)))])
    prepared = prepare(model)
    assert "Identity" not in op_types(prepared)
    assert_same_outputs(model, prepared, {"x": inputs(5, 4)})


def test_dropout_with_used_mask_kept() -> None:
    """A Dropout whose mask is consumed is not a pass-through."""
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["d", "m"], ["y"], name="add")]
    model = make_model(nodes, [value("x", "N", 4)], [value("y", "N", 4)], [])
    prepared = prepare(model)
    assert "Dropout" in op_types(prepared)
    assert_same_outputs(model, prepared, {"x": inputs(3, 4)})


# --------------------------------------------------------------------------- old opsets

def opset9_model() -> onnx.ModelProto:
    """Conv, BatchNormalization, Relu, MaxPool, Flatten, Gemm, Dropout(ratio attr) at opset 9."""
    rng = np.random.default_rng(RNG_SEED + 4)
    bn_inputs, bn_inits, bn_attrs = batch_norm("bn", 4, rng)
    inits = [const("k", rng.standard_normal((4, 2, 3, 3))), const("kb", rng.standard_normal(4)),
             const("g", rng.standard_normal((3, 16))), const("gb", rng.standard_normal(3))]
    nodes = [helper.make_node("Conv", ["x", "k", "kb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", *bn_inputs], ["n"], **bn_attrs),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "g", "gb"], ["h"], transB=1),
             helper.make_node("Dropout", ["h"], ["d"], ratio=0.3),
             helper.make_node("Relu", ["d"], ["y"])]
    return make_model(nodes, [value("x", "N", 2, 4, 4)], [value("y", "N", 3)],
                      inits + bn_inits, opset=9)


def test_opset9_model_upgraded_with_same_outputs() -> None:
    model = opset9_model()
    assert ai_onnx_opset(model) == 9
    prepared = prepare(model)
    assert ai_onnx_opset(prepared) >= 13
    onnx.checker.check_model(prepared)
    assert not {"BatchNormalization", "Dropout"} & set(op_types(prepared))
    assert op_types(prepared).count("Relu") == 2
    assert_same_outputs(model, prepared, {"x": inputs(3, 2, 4, 4)})


def test_opset9_model_with_initializers_as_inputs() -> None:
    """Old exporters list initializers among the graph inputs; they stay constants."""
    model = opset9_model()
    model.graph.input.extend(value(t.name, *t.dims) for t in model.graph.initializer)
    onnx.checker.check_model(model)
    prepared = prepare(model)
    assert ai_onnx_opset(prepared) >= 13
    initializers = {t.name for t in prepared.graph.initializer}
    assert [i.name for i in prepared.graph.input if i.name not in initializers] == ["x"]
    assert_same_outputs(model, prepared, {"x": inputs(3, 2, 4, 4)})


def test_opset13_model_keeps_its_opset() -> None:
    model = conv_bn_model(True, opset=15)
    assert ai_onnx_opset(prepare(model)) == 15


# --------------------------------------------------------------------------- node names

def naming_model(names: list[str]) -> onnx.ModelProto:
    """A chain of Relu/Neg nodes named ``names`` ('' = unnamed)."""
    nodes = []
    current = "x"
    for index, name in enumerate(names):
        out = "y" if index == len(names) - 1 else f"t{index}"
        nodes.append(helper.make_node("Relu" if index % 2 == 0 else "Neg", [current], [out],
                                      name=name))
        current = out
    return make_model(nodes, [value("x", "N", 4)], [value("y", "N", 4)], [])


def test_unnamed_nodes_get_unique_names() -> None:
    model = naming_model(["", "", "", "keep", "dup", "dup", ""])
    prepared = prepare(model)
    names = [node.name for node in prepared.graph.node]
    assert len(names) == 7
    assert all(names) and len(set(names)) == len(names)
    assert names[3] == "keep" and names[4] == "dup"
    x = inputs(2, 4)
    expected = x
    for index in range(7):  # onnxruntime refuses the original: it has two nodes 'dup'
        expected = np.maximum(expected, 0) if index % 2 == 0 else -expected
    np.testing.assert_array_equal(run(prepared, {"x": x})["y"], expected)


def test_prepare_is_idempotent_on_names() -> None:
    prepared = prepare(naming_model(["", "a", "", ""]))
    again = prepare(prepared)
    assert [n.name for n in again.graph.node] == [n.name for n in prepared.graph.node]


def test_given_names_win_over_generated_names() -> None:
    prepared = prepare(naming_model(["", "Neg_1", "Relu_0"]))
    names = [node.name for node in prepared.graph.node]
    assert names[1:] == ["Neg_1", "Relu_0"]
    assert len(set(names)) == 3 and all(names)


def _shuffle_chain(units: int, channels: int = 4) -> onnx.ModelProto:
    """A batch-1 export of ``units`` channel shuffles, each computing its split point
    from the Shape through a Div (as TorchScript writes ``chunk``) and hard-coding the
    batch in two Reshapes: Slice(x, 0, C/2) ++ Relu(Slice(x, C/2, C)) -> Reshape
    [1, 2, C/2, H, W] -> Transpose -> Reshape [1, C, H, W]."""
    nodes, inits, x = [], {}, "x"
    inits.update(one=np.array([1], np.int64), two=np.array([2], np.int64),
                 zero=np.array([0], np.int64), big=np.array([channels], np.int64),
                 split=np.array([1, 2, channels // 2, 3, 3], np.int64),
                 back=np.array([1, channels, 3, 3], np.int64))
    for k in range(units):
        p = f"u{k}_"
        nodes += [helper.make_node("Shape", [x], [p + "shape"]),
                  helper.make_node("Gather", [p + "shape", "one"], [p + "c"], axis=0),
                  helper.make_node("Div", [p + "c", "two"], [p + "half"]),
                  helper.make_node("Slice", [x, "zero", p + "half", "one"], [p + "a"]),
                  helper.make_node("Slice", [x, p + "half", "big", "one"], [p + "b"]),
                  helper.make_node("Relu", [p + "b"], [p + "rb"]),
                  helper.make_node("Concat", [p + "a", p + "rb"], [p + "cat"], axis=1),
                  helper.make_node("Reshape", [p + "cat", "split"], [p + "r1"]),
                  helper.make_node("Transpose", [p + "r1"], [p + "t"], perm=[0, 2, 1, 3, 4]),
                  helper.make_node("Reshape", [p + "t", "back"], [p + "out"])]
        x = p + "out"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes, "shuffles",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 3, 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_long_chain_of_batch_one_reshapes_follows_the_batch() -> None:
    """Each channel shuffle's second Reshape shows its batch only once the first is
    rewritten, and the split point only once the Shape-Div is evaluated: 10 units
    need 20 rounds of rewrites, all found. Run at batch 5, every sample equals the batch-1 ANN."""
    ann = _shuffle_chain(10)
    prepared = prepare(ann)
    x = np.random.default_rng(0).normal(size=(5, 4, 3, 3)).astype(np.float32)
    batched = ort.InferenceSession(prepared.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    single = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([single.run(None, {"x": row[None]})[0] for row in x])
    np.testing.assert_array_equal(batched, expected)
