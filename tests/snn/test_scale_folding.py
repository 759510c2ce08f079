"""Output scales folded into the next weighted layer (``onnx_snn.snn.scale_folding``).

The reference is the same model built without the pass
(``build_spiking_model(..., fold_scales=False)``), run in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model, mlp_model
from onnx import TensorProto, helper

from onnx_snn import HookFactory, convert
from onnx_snn.graph.patterns import run_passes
from onnx_snn.graph.prepare import infer_shapes
from onnx_snn.runtime import SpikingSession
from onnx_snn.snn.assembly import build_spiking_model
from onnx_snn.snn.neurons import IFNeuron
from onnx_snn.snn.rewrite import NeuronPlan as SpikingLayer
from onnx_snn.snn.scale_folding import FoldOutputScales

STEPS = 12
# MaxPool after neurons over-counts spikes (a warning); irrelevant to folding.
pytestmark = pytest.mark.filterwarnings("ignore:MaxPool .* over-counts:UserWarning")
IMAGE = (2, 8, 8)


def _info(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _net(nodes: list, inits: dict, x_shape: tuple, outputs: dict[str, list]) -> onnx.ModelProto:
    """Input x [N, *x_shape]; graph outputs {name: shape}."""
    return make_model(nodes, [_info("x", ["N", *x_shape])],
                      [_info(name, shape) for name, shape in outputs.items()], inits)


def _weights(rng: np.random.Generator, **shapes: tuple) -> dict[str, np.ndarray]:
    """Random float32 weights of the given shapes, scaled by 1/sqrt(size / shape[0])."""
    return {name: (rng.normal(size=shape) * np.sqrt(shape[0] / np.prod(shape)))
            .astype(np.float32) for name, shape in shapes.items()}


def _conv_then(between: list, w1: tuple, tail_op: str, y_shape: list, extra: dict | None = None,
               **tail_attrs) -> onnx.ModelProto:
    """x -> Conv -> Relu 'relu' -> ``between`` (r -> p) -> ``tail_op``(p, w1, b1) -> y."""
    rng = np.random.default_rng(0)
    inits = {**_weights(rng, w0=(4, 2, 3, 3), w1=w1), **(extra or {})}
    inits["b0"] = (rng.normal(size=4) * 0.2 + 0.1).astype(np.float32)
    inits["b1"] = (rng.normal(size=y_shape[1]) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c"], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"), *between,
             helper.make_node(tail_op, ["p" if between else "r", "w1", "b1"], ["y"],
                              **tail_attrs)]
    return _net(nodes, inits, IMAGE, {"y": y_shape})


def _pool(op: str, source: str = "r") -> list:
    return [helper.make_node(op, [source], ["p"], kernel_shape=[2, 2], strides=[2, 2])]


def _mlp(op: str, x_shape=(6,), y_shape=("N", 5)) -> onnx.ModelProto:
    """x -> op(w0) + b0 -> Relu 'relu' -> op(w1) + b1 -> y (Gemm: the second one transB)."""
    rng = np.random.default_rng(1)
    inits = {**_weights(rng, w0=(6, 10)), **_weights(rng, w1=(5, 10) if op == "Gemm" else (10, 5))}
    inits.update(b0=np.full(10, 0.2, np.float32), b1=np.full(5, -0.1, np.float32))
    if op == "Gemm":
        nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["c"]),
                 helper.make_node("Relu", ["c"], ["r"], name="relu"),
                 helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], transB=1)]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w0"], ["m"]),
                 helper.make_node("Add", ["m", "b0"], ["c"]),
                 helper.make_node("Relu", ["c"], ["r"], name="relu"),
                 helper.make_node("MatMul", ["r", "w1"], ["n"]),
                 helper.make_node("Add", ["n", "b1"], ["y"])]
    return _net(nodes, inits, x_shape, {"y": list(y_shape)})


def _flatten(op: str) -> list:
    if op == "Flatten":
        return [helper.make_node("Flatten", ["r"], ["p"], axis=1)]
    shape = helper.make_tensor("flat", TensorProto.INT64, [2], [0, -1])
    return [helper.make_node("Constant", [], ["flat_shape"], value=shape),
            helper.make_node("Reshape", ["r", "flat_shape"], ["p"])]


SPATIAL_PADS = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
FOLDING = {
    "gemm": lambda: _mlp("Gemm"),
    "matmul": lambda: _mlp("MatMul"),
    "conv-avgpool-conv": lambda: _conv_then(_pool("AveragePool"), (3, 4, 3, 3), "Conv",
                                            ["N", 3, 4, 4], pads=[1] * 4),
    "conv-maxpool-conv": lambda: _conv_then(_pool("MaxPool"), (3, 4, 3, 3), "Conv",
                                            ["N", 3, 4, 4], pads=[1] * 4),
    "conv-gap-flatten-gemm": lambda: _conv_then(
        [helper.make_node("GlobalAveragePool", ["r"], ["g"]),
         helper.make_node("Flatten", ["g"], ["p"])], (5, 4), "Gemm", ["N", 5], transB=1),
    "conv-flatten-gemm": lambda: _conv_then(_flatten("Flatten"), (4 * 64, 5), "Gemm", ["N", 5]),
    "conv-reshape-gemm": lambda: _conv_then(_flatten("Reshape"), (4 * 64, 5), "Gemm", ["N", 5]),
    "conv-pad-conv": lambda: _conv_then(
        [helper.make_node("Pad", ["r", "pads"], ["p"], mode="reflect")], (3, 4, 3, 3), "Conv",
        ["N", 3, 8, 8], extra={"pads": SPATIAL_PADS}),
    "conv-grouped-conv": lambda: _conv_then([], (6, 2, 3, 3), "Conv", ["N", 6, 8, 8], group=2,
                                            pads=[1] * 4),
}


def _both(ann: onnx.ModelProto, x: np.ndarray, per_channel: bool):
    """The converted model (folded) and the same layers built without folding."""
    result = convert(ann, x, hook_factory=HookFactory(per_channel=per_channel), progress=False)
    return result.model, build_spiking_model(infer_shapes(ann), result.layers, fold_scales=False)


def _muls(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "Mul" for node in model.graph.node)


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return SpikingSession(model, native=False).run(x, STEPS).outputs


def _shape(model: onnx.ModelProto) -> list[int]:
    """The input's shape, 16 samples where it is symbolic."""
    return [d.dim_value or 16 for d in model.graph.input[0].type.tensor_type.shape.dim]


def _inputs(ann: onnx.ModelProto, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=_shape(ann)).astype(np.float32)


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per-channel"])
@pytest.mark.parametrize("name", FOLDING)
def test_scale_folds_and_outputs_match(name: str, per_channel: bool) -> None:
    ann = FOLDING[name]()
    x = _inputs(ann)
    folded, unfolded = _both(ann, x, per_channel)
    onnx.checker.check_model(folded, full_check=True)
    assert _muls(folded) == _muls(unfolded) - 1
    assert "relu__output_scaler" not in {node.name for node in folded.graph.node}
    # One neuron layer, and folding leaves its input untouched: both models emit the same
    # spikes. Only the last layer's float32 products are rounded differently (s·W·x vs
    # W·(s·x), ~1e-7 relative per term), far below these tolerances.
    np.testing.assert_allclose(_run(folded, x)["y"], _run(unfolded, x)["y"],
                               rtol=1e-5, atol=1e-5)


def test_chain_of_folds_is_exact_on_dyadic_values() -> None:
    """Two neuron layers, per-channel power-of-two scales, weights and inputs on a 1/8 grid:
    every product and sum is exact in float32, so folding changes no bit, and the second
    neuron layer sees exactly the input it sees unfolded."""
    rng = np.random.default_rng(3)

    def grid(*shape: int) -> np.ndarray:
        return (rng.integers(-8, 9, size=shape) / 8).astype(np.float32)

    inits = {"w0": grid(4, 2, 3, 3), "b0": grid(4), "w1": grid(3, 4, 3, 3), "b1": grid(3),
             "w2": grid(5, 3), "b2": grid(5)}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="a"),
             helper.make_node("AveragePool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p0", "w1", "b1"], ["c1"], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="b"),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)]
    ann = infer_shapes(_net(nodes, inits, IMAGE, {"y": ["N", 5]}))
    layers = [SpikingLayer("a", np.array([0.5, 1, 2, 4], np.float32), IFNeuron()),
              SpikingLayer("b", np.array([2, 0.25, 1], np.float32), IFNeuron(v_init=0.5))]
    folded = build_spiking_model(ann, layers)
    unfolded = build_spiking_model(ann, layers, fold_scales=False)
    assert _muls(folded) == _muls(unfolded) - 2
    x = grid(16, *IMAGE)
    np.testing.assert_array_equal(_run(folded, x)["y"], _run(unfolded, x)["y"])


def test_convert_folds_every_layer_also_with_bias_calibration() -> None:
    """Bias calibration measures each layer's scaled output, so it builds unfolded models;
    the model it returns is folded."""
    ann = mlp_model([6, 16, 12, 4])
    x = _inputs(ann)
    for options in ({}, {"bias_calibration": 4}):
        model = convert(ann, x, progress=False, **options).model
        onnx.checker.check_model(model, full_check=True)
        assert not [n.name for n in model.graph.node if n.name.endswith("__output_scaler")]


def _kept(ann: onnx.ModelProto, per_channel: bool = False, **options) -> None:
    """Convert ``ann``: the output scaler of Relu 'relu' must still be there."""
    x = _inputs(ann)
    result = convert(ann, x, hook_factory=HookFactory(per_channel=per_channel), progress=False,
                     **options)
    assert "relu__output_scaler" in {node.name for node in result.model.graph.node}


def test_scaled_output_read_twice_or_a_graph_output_is_kept() -> None:
    rng = np.random.default_rng(4)
    inits = {**_weights(rng, w0=(6, 6), w1=(6, 3), w2=(6, 4)), "b0": np.ones(6, np.float32)}
    head = [helper.make_node("Gemm", ["x", "w0", "b0"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"], name="relu")]
    _kept(_net([*head, helper.make_node("Gemm", ["r", "w1"], ["y"])], inits, (6,),
               {"y": ["N", 3], "r": ["N", 6]}))
    _kept(_net([*head, helper.make_node("Gemm", ["r", "w1"], ["y"]),
                helper.make_node("Gemm", ["r", "w2"], ["z"])], inits, (6,),
               {"y": ["N", 3], "z": ["N", 4]}))
    shared = helper.make_node("Gemm", ["x", "w1"], ["z"])  # w1 also used by another node
    _kept(_net([*head, helper.make_node("Gemm", ["r", "w1"], ["y"]), shared], inits, (6,),
               {"y": ["N", 3], "z": ["N", 3]}))


def test_pooled_graph_output_or_nonlinear_op_on_the_path_is_kept() -> None:
    pooled = _conv_then(_pool("AveragePool"), (3, 4, 3, 3), "Conv", ["N", 3, 2, 2])
    pooled.graph.output.append(_info("p", ["N", 4, 4, 4]))
    _kept(pooled)
    relu = _conv_then([helper.make_node("Relu", ["r"], ["p"], name="analog")],
                      (3, 4, 3, 3), "Conv", ["N", 3, 6, 6])
    _kept(relu, exclude=["analog"])


def test_per_channel_scale_off_the_contracted_axis_is_kept() -> None:
    """[N, 10, 10] @ W: per-channel scales (axis 1) are not along W's rows; a scalar folds."""
    ann = _mlp("MatMul", x_shape=(10, 6), y_shape=("N", 10, 5))
    _kept(ann, per_channel=True)
    x = _inputs(ann)
    folded, unfolded = _both(ann, x, per_channel=False)
    assert _muls(folded) == _muls(unfolded) - 1
    np.testing.assert_allclose(_run(folded, x)["y"], _run(unfolded, x)["y"], rtol=1e-5,
                               atol=1e-5)


def _unit_then(scale: np.ndarray, nodes: list, inits: dict, x_shape: tuple,
               y_shape: list) -> onnx.ModelProto:
    """x -> Sign 'unit' (a stand-in neuron: -1, 0, 1) -> u · scale = s -> ``nodes`` -> y."""
    inits = {"scale": np.asarray(scale, np.float32), **inits}
    nodes = [helper.make_node("Sign", ["x"], ["u"], name="unit"),
             helper.make_node("Mul", ["u", "scale"], ["s"]), *nodes]
    return infer_shapes(make_model(nodes, [_info("x", list(x_shape))], [_info("y", y_shape)],
                                   inits))


def _to_conv(scale: np.ndarray, between: list, inits: dict | None = None) -> onnx.ModelProto:
    """``between`` (s -> p), then Conv(p, w) -> y."""
    weights = _weights(np.random.default_rng(5), w=(2, 3, 3, 3))
    return _unit_then(scale, [*between, helper.make_node("Conv", ["p", "w"], ["y"])],
                      {**weights, **(inits or {})}, (4, 3, 6, 6), [4, 2, None, None])


def _to_gemm(scale: np.ndarray, **attrs) -> onnx.ModelProto:
    """s [3, 3] -> Gemm(s, w [3, 2]) -> y [3, 2] (square, so a transposed A fits too)."""
    w = _weights(np.random.default_rng(5), w=(3, 2))
    return _unit_then(scale, [helper.make_node("Gemm", ["s", "w"], ["y"], **attrs)], w, (3, 3),
                      [3, 2])


POSITIVE = np.array([0.5, 3.0, 0.0]).reshape(3, 1, 1)
SHIFT_CHANNELS = {"pads": np.array([0, 1, 0, 0, 0, -1, 0, 0], np.int64)}
PASS_CASES = {  # name: (model, whether the Mul folds)
    "maxpool, scales >= 0": lambda: (_to_conv(POSITIVE, _pool("MaxPool", "s")), True),
    "maxpool, a negative scale": lambda: (_to_conv(-POSITIVE, _pool("MaxPool", "s")), False),
    "zero pad, per channel": lambda: (_to_conv(POSITIVE, [helper.make_node(
        "Pad", ["s", "pads"], ["p"])], {"pads": SPATIAL_PADS}), True),
    "edge pad, per channel": lambda: (_to_conv(POSITIVE, [helper.make_node(
        "Pad", ["s", "pads"], ["p"], mode="edge")], {"pads": SPATIAL_PADS}), True),
    "pad of 1": lambda: (_to_conv(POSITIVE, [helper.make_node(
        "Pad", ["s", "pads", "one"], ["p"])], {"pads": SPATIAL_PADS,
                                               "one": np.array(1, np.float32)}), False),
    "pad on the channel axis, scalar": lambda: (_to_conv(np.array(2.0), [helper.make_node(
        "Pad", ["s", "pads"], ["p"])], SHIFT_CHANNELS), True),
    "pad on the channel axis, per channel": lambda: (_to_conv(POSITIVE, [helper.make_node(
        "Pad", ["s", "pads"], ["p"])], SHIFT_CHANNELS), False),
    "gemm, per channel": lambda: (_to_gemm(np.array([1.0, 2.0, 3.0])), True),
    "gemm transA, scalar": lambda: (_to_gemm(np.array(2.0), transA=1), True),
    "gemm transA, per channel": lambda: (_to_gemm(np.array([1.0, 2.0, 3.0]), transA=1), False),
}


@pytest.mark.parametrize("name", PASS_CASES)
def test_pass_on_any_named_producer(name: str) -> None:
    """The pass alone, applied to the Mul after a node named in its set."""
    model, folds = PASS_CASES[name]()
    folded = run_passes(model, FoldOutputScales({"unit"}))
    onnx.checker.check_model(folded, full_check=True)
    assert _muls(folded) == (0 if folds else 1)
    x = np.random.default_rng(6).normal(size=_shape(model)).astype(np.float32)
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
               .run(None, {"x": x})[0] for m in (model, folded)]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
