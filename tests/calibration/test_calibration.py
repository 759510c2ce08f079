"""Calibration checked against an independent oracle (docs/semantics.md, "Calibration statistics").

The oracle runs each test model in onnxruntime with every Relu output added as
a graph output (whole tensors, no in-graph reductions), or computes the Relu
output in numpy where the Relu reads the input directly, then applies
``np.max`` / ``np.percentile`` / ``f * max`` and the moving average in Python.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_snn import (
    Calibration,
    HookFactory,
    NeuronFactory,
    OnnxSnnError,
    VoltageHook,
    calibrate,
    convert,
)

OPSET = 17
MODES: list[str | float] = ["Max", "max", "99.9%", "50%", "0%", "100%", "12.5%", 0.5, 1.0, 1 / 3]
MOMENTA = [0.0, 0.1, 0.5, 1.0]


# --------------------------------------------------------------------------- models

def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _tensor(name: str, *shape: int | str, elem_type: int = TensorProto.FLOAT
            ) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def mlp_model(seed: int = 0, sizes: tuple[int, ...] = (6, 16, 12, 4)) -> onnx.ModelProto:
    """MatMul + Add (+ Relu 'relu<i>') layers with fixed random weights; last layer linear."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [_const(f"w{i}", rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)),
                  _const(f"b{i}", rng.standard_normal(fan_out) * 0.3)]
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"pre{i}"], name=f"add{i}")]
        current = f"pre{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [current], [f"act{i}"], name=f"relu{i}"))
            current = f"act{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"], name="out"))
    return _model(nodes, [_tensor("x", "N", sizes[0])], [_tensor("y", "N", sizes[-1])], inits)


def conv_model(seed: int = 1) -> onnx.ModelProto:
    """Conv+Relu 'c0', Conv+Relu 'c1', Flatten, Gemm+Relu 'fc', Gemm: three Relus."""
    rng = np.random.default_rng(seed)
    shapes = {"k0": (4, 2, 3, 3), "kb0": (4,), "k1": (3, 4, 3, 3), "kb1": (3,),
              "g0": (5, 12), "gb0": (5,), "g1": (5, 3)}
    inits = [_const(name, rng.standard_normal(shape) * (0.2 if len(shape) == 1 else 0.3))
             for name, shape in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "k0", "kb0"], ["t0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["t0"], ["r0"], name="c0"),
        helper.make_node("Conv", ["r0", "k1", "kb1"], ["t1"], name="conv1", strides=[2, 2]),
        helper.make_node("Relu", ["t1"], ["r1"], name="c1"),
        helper.make_node("Flatten", ["r1"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "g0", "gb0"], ["t2"], name="gemm0", transB=1),
        helper.make_node("Relu", ["t2"], ["r2"], name="fc"),
        helper.make_node("Gemm", ["r2", "g1"], ["y"], name="gemm1"),
    ]
    return _model(nodes, [_tensor("x", "N", 2, 6, 6)], [_tensor("y", "N", 3)], inits)


def parallel_relu_model(names: list[str], features: int = 1,
                        elem_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """Relus named ``names``, each reading the input x [N, features] directly."""
    nodes = [helper.make_node("Relu", ["x"], [f"{name}_out"], name=name) for name in names]
    outputs = [_tensor(f"{name}_out", "N", features, elem_type=elem_type) for name in names]
    return _model(nodes, [_tensor("x", "N", features, elem_type=elem_type)], outputs, [])


def dead_relu_model() -> onnx.ModelProto:
    """Relu 'alive' then Relu 'dead', whose input is always -1 (weights 0, bias -1)."""
    rng = np.random.default_rng(3)
    inits = [_const("w0", rng.standard_normal((4, 5))), _const("b0", np.full(5, 0.1)),
             _const("w1", np.zeros((5, 3))), _const("b1", np.full(3, -1.0))]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["p0"], name="gemm0"),
             helper.make_node("Relu", ["p0"], ["a0"], name="alive"),
             helper.make_node("Gemm", ["a0", "w1", "b1"], ["p1"], name="gemm1"),
             helper.make_node("Relu", ["p1"], ["y"], name="dead")]
    return _model(nodes, [_tensor("x", "N", 4)], [_tensor("y", "N", 3)], inits)


# --------------------------------------------------------------------------- oracle

def relu_names(model: onnx.ModelProto) -> list[str]:
    """Names of the Relu nodes, in graph order."""
    return [node.name for node in model.graph.node if node.op_type == "Relu"]


def relu_outputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every Relu's whole output tensor for input ``x``, by Relu node name."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    relus = [node for node in exposed.graph.node if node.op_type == "Relu"]
    existing = {out.name for out in exposed.graph.output}
    for node in relus:
        if node.output[0] not in existing:
            exposed.graph.output.append(helper.make_empty_tensor_value_info(node.output[0]))
    session = ort.InferenceSession(exposed.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    results = session.run([node.output[0] for node in relus], {"x": x})
    return {node.name: result for node, result in zip(relus, results)}


def statistic(tensor: np.ndarray, mode: str | float) -> float:
    """The per-batch statistic (docs/semantics.md, "Calibration statistics"), straight
    from numpy."""
    if isinstance(mode, str) and mode.lower() == "max":
        return float(np.max(tensor))
    if isinstance(mode, str):
        return float(np.percentile(tensor, float(mode[:-1])))
    return float(mode) * float(np.max(tensor))


def ema(values: list[float], momentum: float) -> float:
    """First value, then ``(1 - m) * scale + m * value`` for each later one."""
    scale = values[0]
    for value in values[1:]:
        scale = (1.0 - momentum) * scale + momentum * value
    return scale


def split(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches along axis 0, the last one possibly shorter."""
    return [x[start:start + batch_size] for start in range(0, len(x), batch_size)]


def oracle(model: onnx.ModelProto, x: np.ndarray, batch_size: int,
           modes: dict[str, str | float], momentum: float) -> dict[str, float]:
    """Expected scale per Relu name, for a mode per Relu."""
    per_batch = [relu_outputs(model, batch) for batch in split(x, batch_size)]
    return {name: ema([statistic(outs[name], mode) for outs in per_batch], momentum)
            for name, mode in modes.items()}


def run_calibrate(model: onnx.ModelProto, x: np.ndarray, batch_size: int,
                  modes: dict[str, str | float], momentum: float = 0.1) -> Calibration:
    """``calibrate`` with a fresh hook per Relu, each in its own mode."""
    hooks = {name: HookFactory(mode, momentum).create() for name, mode in modes.items()}
    return calibrate(model, x, hooks, batch_size=batch_size, progress=False)


def inputs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- statistics

@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("build,shape", [(mlp_model, (37, 6)), (conv_model, (9, 2, 6, 6))],
                         ids=["mlp", "conv"])
def test_single_batch_statistic_is_exact(build, shape: tuple[int, ...], mode: str | float) -> None:
    """With one batch the scale is the statistic itself, equal to numpy's to the last bit."""
    model = build()
    x = inputs(shape, seed=11)
    modes = {name: mode for name in relu_names(model)}
    result = run_calibrate(model, x, batch_size=len(x), modes=modes)
    expected = oracle(model, x, len(x), modes, momentum=0.1)
    assert result.scales == expected
    assert (result.batches, result.samples) == (1, len(x))


@pytest.mark.parametrize("momentum", MOMENTA)
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_moving_average_matches_oracle(mode: str | float, momentum: float) -> None:
    """23 samples in batches of 5 (last batch 3): EMA of per-batch statistics, in order."""
    model = mlp_model()
    x = inputs((23, 6), seed=5)
    modes = {name: mode for name in relu_names(model)}
    result = run_calibrate(model, x, batch_size=5, modes=modes, momentum=momentum)
    expected = oracle(model, x, 5, modes, momentum)
    assert list(result.scales) == relu_names(model)
    for name, value in expected.items():
        assert result.scales[name] == pytest.approx(value, rel=1e-12, abs=0.0), name
    assert (result.batches, result.samples) == (5, 23)
    layers = {layer.node: layer for layer in result.layers}
    assert all(layers[n].mode == mode and layers[n].momentum == momentum for n in modes)


def test_moving_average_is_not_a_global_maximum() -> None:
    """Order and batch size matter: the result is an EMA, unlike the max over all data."""
    model = parallel_relu_model(["r"])
    x = np.array([[4.0], [1.0], [2.0], [1.0]], dtype=np.float32)
    forward = run_calibrate(model, x, batch_size=1, modes={"r": "Max"}, momentum=0.5)
    backward = run_calibrate(model, x[::-1].copy(), batch_size=1, modes={"r": "Max"},
                             momentum=0.5)
    whole = run_calibrate(model, x, batch_size=4, modes={"r": "Max"}, momentum=0.5)
    assert forward.scales["r"] == ema([4.0, 1.0, 2.0, 1.0], 0.5) == 1.625
    assert backward.scales["r"] == ema([1.0, 2.0, 1.0, 4.0], 0.5) == 2.625
    assert whole.scales["r"] == 4.0


@pytest.mark.parametrize("mode", ["Max", "99.9%", "90%", 1 / 3], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.5, 1.0])
def test_convert_calibration_matches_oracle(mode: str | float, momentum: float) -> None:
    """``convert(...).calibration`` on a Conv/Gemm model: 17 samples in batches of 7."""
    model = conv_model()
    x = inputs((17, 2, 6, 6), seed=8)
    result = convert(model, x, hook_factory=HookFactory(mode, momentum), batch_size=7,
                     progress=False)
    modes = {name: mode for name in relu_names(model)}
    expected = oracle(model, x, 7, modes, momentum)
    assert list(result.calibration.scales) == ["c0", "c1", "fc"]
    for name, value in expected.items():
        assert result.calibration.scales[name] == pytest.approx(value, rel=1e-12, abs=0.0)
    assert (result.calibration.batches, result.calibration.samples) == (3, 17)
    assert [(layer.node, layer.scale) for layer in result.layers] == \
        list(result.calibration.scales.items())


#: Includes percentiles whose index (n - 1) * P / 100 falls a rounding step off an integer
#: for some n (0.7, 7, 29, 33.3, 57, 58, 69.9, 99.9), on either side of 50%.
PERCENTS = ["0%", "1e-05%", "0.1%", "0.7%", "7%", "12.5%", "25%", "29%", "33.3%", "50%", "57%",
            "58%", "66.7%", "69.9%", "87.5%", "99%", "99.9%", "99.99%", "100%"]


def _near_integer_sizes(percent: float, step: int = 1, limit: int = 6000,
                        count: int = 2) -> list[int]:
    """Sizes n (multiples of ``step``) whose index (n - 1) * q lands within 1e-9 of an
    integer but not on it."""
    q = np.true_divide(percent, 100)
    found = []
    for n in range(2 * step, limit, step):
        index = (n - 1) * q
        distance = abs(index - round(float(index)))
        if 0 < distance < 1e-9:
            found.append(n)
            if len(found) == count:
                break
    return found


def _exact_integer_sizes(percent: float, step: int = 1, limit: int = 6000,
                         count: int = 2) -> list[int]:
    """Sizes n > 2 (multiples of ``step``) whose index (n - 1) * q is a whole number."""
    q = np.true_divide(percent, 100)
    return [n for n in range(3 * step, limit, step)
            if float((n - 1) * q).is_integer()][:count]


def _percentile_sizes(step: int) -> list[int]:
    """Tensor sizes (multiples of ``step``) to test every percentile on."""
    sizes = {step * k for k in (1, 2, 3, 5, 8, 101, 1000 // step, 1001)}
    for text in PERCENTS:
        percent = float(text[:-1])
        sizes.update(_near_integer_sizes(percent, step))
        sizes.update(_exact_integer_sizes(percent, step))
    return sorted(sizes)


def test_near_integer_sizes_exist() -> None:
    """The percentile-index test below really includes indexes a rounding step off integers."""
    for percent in (0.7, 7.0, 29.0, 33.3, 57.0, 58.0, 69.9, 99.9):
        assert _near_integer_sizes(percent) and _near_integer_sizes(percent, step=3), percent
    assert 201 in _exact_integer_sizes(50.0, limit=300, count=200)


@pytest.mark.parametrize("features", [1, 3])
def test_percentile_index_on_and_near_integers(features: int) -> None:
    """np.percentile equality for every percentile on sizes with (near-)integer indexes.

    Relus read the input directly, so their output is ``np.maximum(x, 0)`` exactly.
    Data has ties (rounded values), many zeros and a batch of one element.
    """
    names = [f"p{i}" for i in range(len(PERCENTS))]
    model = parallel_relu_model(names, features)
    rng = np.random.default_rng(42)
    checked = 0
    for n in _percentile_sizes(features):
        rows = n // features
        x = rng.standard_normal((rows, features)).astype(np.float32)
        x[::3] = np.round(x[::3], 1)
        result = run_calibrate(model, x, batch_size=rows, modes=dict(zip(names, PERCENTS)))
        relu = np.maximum(x, 0)
        for name, mode in zip(names, PERCENTS):
            assert result.scales[name] == float(np.percentile(relu, float(mode[:-1]))), \
                (n, features, mode)
            checked += 1
    assert checked >= len(PERCENTS) * 15


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("mode", ["101%", "-1%", "abc", "%", "nan%", "inf%", "", "max%", 0, 0.0,
                                  1.5, -0.1, float("nan"), True, False, None, [0.5]], ids=repr)
def test_invalid_mode_rejected_at_construction(mode: object) -> None:
    with pytest.raises(OnnxSnnError, match="mode"):
        HookFactory(mode=mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("momentum", [-0.1, 1.1, True, "x", None, float("nan"), float("inf")],
                         ids=repr)
def test_invalid_momentum_rejected_at_construction(momentum: object) -> None:
    with pytest.raises(OnnxSnnError, match="momentum"):
        HookFactory(mode="Max", momentum=momentum)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES + [" MAX ", "0.0%", "100.0%", 1, np.float32(0.25)], ids=repr)
@pytest.mark.parametrize("momentum", [0, 0.0, 1, 1.0, np.float64(0.3)], ids=repr)
def test_valid_settings_accepted(mode: str | float, momentum: float) -> None:
    factory = HookFactory(mode=mode, momentum=momentum)
    hook = factory.create()
    assert isinstance(hook, VoltageHook)
    assert hook.momentum == float(momentum)


# --------------------------------------------------------------------------- dead Relus

def test_dead_relu_named_in_error() -> None:
    x = inputs((20, 4), seed=2)
    with pytest.raises(OnnxSnnError) as caught:
        convert(dead_relu_model(), x, batch_size=8, progress=False)
    message = str(caught.value)
    assert "'dead'" in message and "'alive'" not in message


def test_zero_percentile_scale_named_in_error() -> None:
    """'0%' gives scale 0 wherever some output is 0: an error naming every such Relu."""
    x = inputs((20, 4), seed=2)
    expected = oracle(dead_relu_model(), x, 8, {"alive": "0%", "dead": "0%"}, 0.1)
    assert expected == {"alive": 0.0, "dead": 0.0}
    with pytest.raises(OnnxSnnError) as caught:
        convert(dead_relu_model(), x, hook_factory=HookFactory("0%"), batch_size=8,
                progress=False)
    assert "'dead'" in str(caught.value) and "'alive'" in str(caught.value)


def test_dead_relu_excluded_converts() -> None:
    """Excluding the dead Relu leaves a valid conversion of the other one."""
    x = inputs((20, 4), seed=2)
    result = convert(dead_relu_model(), x, exclude=["dead"], batch_size=8, progress=False)
    assert list(result.calibration.scales) == ["alive"]
    assert result.calibration.scales["alive"] == pytest.approx(
        oracle(dead_relu_model(), x, 8, {"alive": "Max"}, 0.1)["alive"], rel=1e-12)


# --------------------------------------------------------------------------- save / load

def test_calibration_save_load_round_trip(tmp_path: Path) -> None:
    model = conv_model()
    x = inputs((13, 2, 6, 6), seed=4)
    first = convert(model, x, hook_factory=HookFactory(1 / 3, 0.5), batch_size=4,
                    progress=False)
    path = first.calibration.save(tmp_path / "calibration.json")
    saved = json.loads(path.read_text())
    assert [layer["node"] for layer in saved["layers"]] == ["c0", "c1", "fc"]
    assert (saved["batches"], saved["samples"]) == (4, 13)

    loaded = Calibration.load(path)
    assert loaded == first.calibration
    assert all(layer.mode == 1 / 3 and layer.momentum == 0.5 for layer in loaded.layers)

    again = convert(model, None, calibration=loaded, progress=False)
    assert again.model == first.model
    assert again.model.SerializeToString() == first.model.SerializeToString()
    assert again.calibration == first.calibration


def test_percentile_mode_survives_round_trip(tmp_path: Path) -> None:
    model = mlp_model()
    x = inputs((10, 6), seed=6)
    first = convert(model, x, hook_factory=HookFactory("99.9%", 1.0), batch_size=3,
                    progress=False)
    loaded = Calibration.load(first.calibration.save(tmp_path / "c.json"))
    assert [layer.mode for layer in loaded.layers] == ["99.9%", "99.9%"]
    assert loaded.scales == first.calibration.scales


def test_calibration_load_errors(tmp_path: Path) -> None:
    with pytest.raises(OnnxSnnError, match="missing.json"):
        Calibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"layers": [{"node": "r"}]}')
    with pytest.raises(OnnxSnnError, match="bad.json"):
        Calibration.load(bad)


# --------------------------------------------------------------------------- one hook per Relu

class RecordingFactory(HookFactory):
    """A HookFactory that keeps every hook it creates."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.created: list[VoltageHook] = []

    def create(self) -> VoltageHook:
        hook = super().create()
        self.created.append(hook)
        return hook


def test_create_returns_fresh_hooks() -> None:
    factory = HookFactory("50%", 0.3)
    first, second = factory.create(), factory.create()
    assert first is not second
    assert first.scale is None and first.batches == 0
    first.update(2.0)
    first.update(4.0)
    assert first.scale == pytest.approx(0.7 * 2.0 + 0.3 * 4.0, rel=1e-15)
    assert first.batches == 2
    assert second.scale is None and second.batches == 0


def test_create_called_once_per_converted_relu() -> None:
    model = conv_model()
    x = inputs((11, 2, 6, 6), seed=9)
    factory = RecordingFactory("Max", 0.5)
    result = convert(model, x, hook_factory=factory, batch_size=4, progress=False)
    assert len(factory.created) == 3
    assert len({id(hook) for hook in factory.created}) == 3
    assert all(hook.batches == 3 for hook in factory.created)
    assert [hook.scale for hook in factory.created] == list(result.calibration.scales.values())

    excluding = RecordingFactory("Max", 0.5)
    result = convert(model, x, hook_factory=excluding, exclude=["c1"], batch_size=4,
                     progress=False)
    assert len(excluding.created) == 2
    assert list(result.calibration.scales) == ["c0", "fc"]


def test_per_relu_factories_use_their_own_mode() -> None:
    """``factories`` picks a HookFactory per Relu; each Relu is calibrated in its own mode."""
    model = conv_model()
    x = inputs((11, 2, 6, 6), seed=9)
    chosen = {"c0": RecordingFactory("50%", 0.2), "c1": RecordingFactory(0.5, 1.0),
              "fc": RecordingFactory("max", 0.0)}
    result = convert(model, x, factories=lambda node: (chosen[node.name], NeuronFactory()),
                     batch_size=4, progress=False)
    assert all(len(factory.created) == 1 for factory in chosen.values())
    for name, factory in chosen.items():
        expected = oracle(model, x, 4, {name: factory.mode}, factory.momentum)[name]
        assert result.calibration.scales[name] == pytest.approx(expected, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("mode", ["Max", "50%"])
def test_float64_model_calibrates(mode: str) -> None:
    model = parallel_relu_model(["r"], features=4, elem_type=TensorProto.DOUBLE)
    x = np.random.default_rng(0).standard_normal((10, 4))
    result = run_calibrate(model, x, batch_size=10, modes={"r": mode})
    assert result.scales["r"] == statistic(np.maximum(x, 0), mode)
