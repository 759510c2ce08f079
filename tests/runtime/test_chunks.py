"""Runs in chunks of steps (and of samples) give the outputs of one call, bit for bit,
and follow a plain IF loop; the memory budget and plans (docs/chunked-execution.md)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import load_example, make_model, mlp_model
from onnx import TensorProto, helper

from onnx_snn import NeuronFactory, SpikingSession, convert
from onnx_snn.config import PRESETS
from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.chunked import to_chunked
from onnx_snn.export.formats import export_format
from onnx_snn.io.metadata import TIMESTEPS_KEY
from onnx_snn.ops.if_node_model import if_node_model
from onnx_snn.runtime.chunks import BYTES_PER_CARRIED_VALUE, ChunkedRun, plan_chunks
from onnx_snn.runtime.memory import parse_size, set_memory_limit
from onnx_snn.runtime.sessions import create_session, run_checked

T = 13


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def _runs(model: onnx.ModelProto, x, rows: int, sequence: bool = False) -> None:
    """One call against calls of all steps x 2 samples, and of 3 or 5 steps x 1 sample."""
    whole = SpikingSession(model, memory_limit="1PB")
    reference = whole.run(x, T, sequence=sequence).outputs
    assert not whole.last_plan.chunked
    step, kept = whole.step_bytes, whole.output_bytes(T, rows)
    state = whole.carried_values * BYTES_PER_CARRIED_VALUE
    for limit, expected in [(2 * T * step, (T, 2)), (state + 3 * step, (3, 1)),
                            (state + 5 * step, (5, 1))]:
        session = SpikingSession(model, memory_limit=kept + limit)
        outputs = session.run(x, T, sequence=sequence).outputs
        assert (session.last_plan.steps, session.last_plan.batch) == expected
        for name, value in reference.items():
            _same_bits(outputs[name], value)


def _td_model() -> onnx.ModelProto:
    """x [N, 6] -> MatMul -> Relu -> MatMul -> Sigmoid (a TD op) -> MatMul -> Relu -> y."""
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=shape).astype(np.float32) for shape in [(6, 12), (12, 8), (8, 4)]]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
             helper.make_node("Sigmoid", ["h1"], ["g"]),
             helper.make_node("MatMul", ["g", "w2"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      {f"w{i}": w for i, w in enumerate(weights)})


def _pool_model() -> onnx.ModelProto:
    """x [N, 1, 6, 6] -> Conv -> Relu -> MaxPool 2x2 -> Flatten -> Gemm -> y."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "g", "c2"], ["y"])]
    inits = {"w": rng.normal(size=(3, 1, 3, 3)), "b": rng.normal(size=3) * 0.1,
             "g": rng.normal(size=(27, 4)), "c2": np.zeros(4)}
    return make_model(nodes,
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      {k: np.asarray(v, np.float32) for k, v in inits.items()})


@pytest.mark.parametrize("settings", [
    {}, {"neuron_factory": PRESETS["best"].neuron_factory.replace(max_spikes=3)},
    {"neuron_factory": PRESETS["best"].neuron_factory.replace(v_reset=0.0)}],
    ids=["if", "burst", "hard-reset"])
def test_chunked_mlp_gives_the_same_bits(settings: dict) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    snn = convert(mlp_model([8, 16, 16, 4], seed=1), x, progress=False, **settings).model
    _runs(snn, x[:6], 6)


def test_chunked_time_difference_ops_give_the_same_bits() -> None:
    x = np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)
    snn = convert(_td_model(), x, progress=False).model
    ops = {node.op_type for node in snn.graph.node}
    assert {"RunningMean", "StepDifference"} <= ops, ops
    _runs(snn, x[:5], 5)


@pytest.mark.parametrize("maxpool", ["td", "gated", "keep"])
def test_chunked_maxpool_gives_the_same_bits(maxpool: str) -> None:
    x = np.random.default_rng(2).random((32, 1, 6, 6)).astype(np.float32)
    snn = convert(_pool_model(), x, maxpool=maxpool, progress=False).model
    _runs(snn, x[:4], 4)


def test_a_chunked_model_runs_in_chunks_as_it_is() -> None:
    """The chunked format itself, run in calls of 3 steps, and exported again unchanged."""
    x = np.random.default_rng(9).normal(size=(64, 8)).astype(np.float32)
    snn = convert(mlp_model([8, 16, 4], seed=6), x, progress=False).model
    chunked = export_format(snn, "chunked")
    assert export_format(chunked, "chunked") == chunked
    _runs(chunked, x[:3], 3)


def test_chunked_sequence_input_gives_the_same_bits() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    snn = convert(mlp_model([8, 16, 4], seed=2), x, progress=False).model
    _runs(snn, rng.normal(size=(T, 3, 8)).astype(np.float32), 3, sequence=True)


@pytest.mark.parametrize("attributes", [
    {"v_init": 0.5}, {"hard_reset": 1, "v_reset": -0.25}, {"max_spikes": 2, "signed": 1}],
    ids=["soft", "hard", "signed-burst"])
def test_chunked_neuron_follows_a_plain_loop(attributes: dict) -> None:
    """One IFNode (threshold 0.7) on a sequence, run in chunks of 4 steps: the spikes of
    the IF dynamics written out here."""
    theta, features = 0.7, 5
    model = if_node_model({"v_threshold": theta, "v_reset": 0.0, "v_init": 0.0, "hard_reset": 0,
                           "broadcast_input": 1, **attributes},
                          ["S", 2, features])
    helper.set_model_props(model, {TIMESTEPS_KEY: "T"})
    x = np.random.default_rng(6).normal(size=(T, 2, features)).astype(np.float32)
    theta32 = np.float32(theta)
    v = np.full((2, features), np.float32(attributes.get("v_init", 0.0)) * theta32, np.float32)
    low, high = ((-2, 2) if attributes.get("signed") else (0, 1))
    expected = []
    for t in range(T):
        h = v + x[t]
        if "max_spikes" in attributes:
            s = np.clip(np.floor(h / theta32), low, high).astype(np.float32)
        else:
            s = (h >= theta32).astype(np.float32)
        if attributes.get("hard_reset"):
            v = np.where(s != 0, np.float32(attributes["v_reset"]), h).astype(np.float32)
        else:
            v = (h - s * theta32).astype(np.float32)
        expected.append(s)
    assert len(to_chunked(model).graph.input) == 3  # X, T and the potentials
    run = ChunkedRun(model, create_session, run_checked)
    got, = run.run(["S"], {"X": x}, "T", T, {"X"}, 4)
    np.testing.assert_array_equal(got.reshape(T, 2, features), np.stack(expected))


@pytest.fixture
def process_limit():
    """Sets the process-wide memory limit for one test, then goes back to the default."""
    yield set_memory_limit
    set_memory_limit(None)


def test_bias_calibration_in_chunks_gives_the_same_model(process_limit) -> None:
    """Bias calibration measures the SNN at T = 24; with a budget that holds a few
    steps of one sample, it runs in chunks of steps and writes the same model."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    ann = mlp_model([8, 32, 32, 4], seed=3)
    whole = convert(ann, x, bias_calibration=24, progress=False).model
    probe = SpikingSession(whole)
    limit = (probe.output_bytes(24, 1) + probe.carried_values * BYTES_PER_CARRIED_VALUE
             + 5 * probe.step_bytes)
    assert SpikingSession(whole, memory_limit=limit).plan(24, 1).steps < 24
    process_limit(limit)
    chunked = convert(ann, x, bias_calibration=24, progress=False).model
    assert chunked.SerializeToString() == whole.SerializeToString()


@pytest.mark.parametrize("net", ["mlp", "td"])
def test_the_standard_format_runs_in_chunks_in_plain_onnx(net: str) -> None:
    """Its neurons are Scans from their state inputs and its time ops plain ONNX: calls
    of steps and of samples give one call's bits, with no custom op."""
    x = np.random.default_rng(8).normal(size=(64, 8 if net == "mlp" else 6)).astype(np.float32)
    ann = mlp_model([8, 16, 4], seed=5) if net == "mlp" else _td_model()
    standard = export_format(convert(ann, x, progress=False).model, "standard")
    assert {node.domain for node in standard.graph.node} == {""} and not standard.functions
    _runs(standard, x[:4], rows=4)


def test_a_standard_model_of_user_neurons_refuses_chunks_of_steps_but_splits_samples() -> None:
    """User-defined neurons keep their own Scans over all T steps: samples can be
    split, steps cannot."""
    lif = load_example("custom_neuron").LIFNeuron
    x = np.random.default_rng(8).normal(size=(64, 8)).astype(np.float32)
    snn = convert(mlp_model([8, 16, 4], seed=5), x, neuron_factory=NeuronFactory(lif, decay=0.9),
                  progress=False).model
    standard = export_format(snn, "standard")
    whole = SpikingSession(standard, memory_limit="1PB")
    reference = whole.run(x[:4], T).outputs
    split = SpikingSession(standard,
                           memory_limit=whole.output_bytes(T, 4) + 2 * T * whole.step_bytes)
    for name, value in split.run(x[:4], T).outputs.items():
        _same_bits(value, reference[name])
    assert (split.last_plan.steps, split.last_plan.batch) == (T, 2)
    tight = SpikingSession(standard, memory_limit=whole.output_bytes(T, 4) + 2 * whole.step_bytes
                           + whole.carried_values * BYTES_PER_CARRIED_VALUE)
    with pytest.raises(OnnxSnnError, match="a Scan or Loop .* cannot run in chunks of steps"):
        tight.run(x[:4], T)


def test_plans_are_the_largest_chunks_that_fit() -> None:
    def calls(*args) -> tuple[int, int]:
        plan = plan_chunks(*args)
        return plan.steps, plan.batch

    assert calls(100, 8, 1000, 500, None) == (100, 8)  # no budget known: one call
    assert calls(100, 8, 1000, 500, 800_000) == (100, 8)  # 800 sample-steps fit
    assert calls(100, 8, 1000, 500, 300_000) == (100, 3)  # all steps of 3 samples a call
    assert calls(1000, 8, 1000, 500, 300_000) == (299, 1)  # (300,000 - 500) // 1000
    with pytest.raises(OnnxSnnError, match="one sample and one step need about 1,500 bytes"):
        plan_chunks(10, 1, 1000, 500, 1499)


@pytest.mark.parametrize("text, size", [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20),
                                        ("1.5G", 15 * 10**8), ("4096", 4096), (" 3 kib ", 3072)])
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "2 GBB", "-1GB", "0", "lots", "nan"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(OnnxSnnError, match="memory limit"):
        parse_size(text)
