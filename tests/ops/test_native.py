"""The native IFNode kernel: bit-exact with the function body and numpy, and its loading.

Without the library (a build that failed at install time) these tests skip,
unless ``ONNX_SNN_REQUIRE_NATIVE=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_ifnode import if_model, reference

from onnx_snn.ops.if_node_model import if_node_model
from onnx_snn.ops.native import kernel_runs, native_library_path
from onnx_snn.snn.neurons import IFNeuron


def session(model: onnx.ModelProto, library: str | None) -> ort.InferenceSession:
    """A session with the kernel ``library`` registered, or None for the function body."""
    options = ort.SessionOptions()
    if library is not None:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run(x_seq: np.ndarray, neuron: IFNeuron, library: str | None) -> np.ndarray:
    """Spikes for a [T, N, ...] sequence, with the kernel (``library``) or the function body."""
    folded = x_seq.reshape(-1, *x_seq.shape[2:])
    spikes = session(if_model(list(folded.shape), neuron), library).run(
        None, {"X": folded, "T": np.array(x_seq.shape[0], np.int64)})[0]
    return spikes.reshape(x_seq.shape)


def assert_three_agree(x_seq: np.ndarray, neuron: IFNeuron, library: str) -> None:
    expected = reference(x_seq, neuron)
    np.testing.assert_array_equal(run(x_seq, neuron, library), expected)
    np.testing.assert_array_equal(run(x_seq, neuron, None), expected)


NEURONS = [IFNeuron(1.0), IFNeuron(0.37, v_init=0.5), IFNeuron(2.5, v_init=0.25),
           IFNeuron(1.0, v_reset=0.0), IFNeuron(0.6, v_reset=-0.3, v_init=0.5),
           IFNeuron(3.0, v_reset=0.5)]
SHAPES = [(8, 4, 37), (8, 2, 3, 5, 7), (5, 1, 11), (1, 6, 4, 3, 3), (1, 1, 1)]


@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_random_inputs_agree_bit_for_bit(library, neuron, shape, rng) -> None:
    """Soft and hard reset, several thresholds and starts; 2-D and 4-D, N = 1, T = 1."""
    x = rng.normal(0.3 * neuron.v_threshold, neuron.v_threshold, shape).astype(np.float32)
    assert_three_agree(x, neuron, library)


@pytest.mark.parametrize("neuron", NEURONS[:1] + NEURONS[3:4], ids=repr)
def test_values_at_the_threshold_fire(library, neuron) -> None:
    """Inputs that land exactly on θ (and just below it) at every step."""
    theta = np.float32(neuron.v_threshold)
    steps = np.array([theta, theta / 4, np.nextafter(theta, 0), theta / 2, theta / 2, 0.0],
                     np.float32)
    x = np.broadcast_to(steps[:, None, None], (6, 3, 4)).copy()
    assert_three_agree(x, neuron, library)
    assert run(x, neuron, library)[0].all()  # h = θ fires


@pytest.mark.parametrize("neuron", [NEURONS[1], NEURONS[4]], ids=repr)
def test_large_and_negative_inputs(library, neuron, rng) -> None:
    x = rng.choice(np.array([-1e30, -3e5, -1.0, 0.0, 7e4, 1e30, -0.0], np.float32),
                   size=(16, 3, 29))
    assert_three_agree(x, neuron, library)


@pytest.mark.parametrize("features", [4096 * 64, 4096 * 64 + 3])
def test_large_tensors_take_the_streaming_path(library, features, rng) -> None:
    """Outputs of 32 MiB and more are stored around the cache; odd widths misalign rows."""
    x = rng.normal(0.2, 1.0, (32, 1, features)).astype(np.float32)
    for neuron in (NEURONS[1], NEURONS[4]):
        assert_three_agree(x, neuron, library)


def test_sessions_run_the_kernel_not_the_function(library) -> None:
    from onnx_snn.runtime import session_options

    assert kernel_runs(session_options())
    assert not kernel_runs(session_options(native=False))


def test_timesteps_that_do_not_divide_the_input_are_an_error(library) -> None:
    ifnode = session(if_model([6, 5], IFNeuron()), library)
    with pytest.raises(Exception, match="IFNode: X has 30 elements, not a multiple of T = 4"):
        ifnode.run(None, {"X": np.zeros((6, 5), np.float32), "T": np.array(4, np.int64)})


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_without_the_library_the_function_runs_and_warns_once(tmp_path) -> None:
    code = ("import numpy as np\n"
            "from onnx_snn.runtime import session_options\n"
            "from onnx_snn.ops.native import kernel_runs\n"
            "print(kernel_runs(session_options()), kernel_runs(session_options()))\n")
    result = _python(code, ONNX_SNN_OPS_LIBRARY=str(tmp_path / "missing.so"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert result.stderr.count("native kernels (IFNode, time ops) unavailable") == 1
    assert "missing.so is not a file" in result.stderr


def test_a_library_that_does_not_load_is_reported(tmp_path) -> None:
    broken = tmp_path / "libbroken.so"
    broken.write_bytes(b"not a shared library")
    result = _python("from onnx_snn.cli import main; main(['doctor'])",
                     ONNX_SNN_OPS_LIBRARY=str(broken))
    assert "IFNode backend: function" in result.stdout
    assert "does not load" in result.stdout


def test_doctor_reports_the_native_backend(library, capsys) -> None:
    from onnx_snn.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "IFNode backend: native" in out
    assert str(native_library_path()) in out


def broadcast_run(x_steps: np.ndarray, steps: int, neuron: IFNeuron,
                  library: str | None) -> np.ndarray:
    """Spikes [T, N, ...] of an IFNode with broadcast_input = 1 fed X = x_steps [S, N, ...]."""
    model = if_node_model({**neuron.attributes(), "broadcast_input": 1},
                          ["S", *x_steps.shape[1:]])
    spikes = session(model, library).run(None, {"X": x_steps,
                                                "T": np.array(steps, np.int64)})[0]
    assert spikes.shape == (steps * x_steps.shape[1], *x_steps.shape[2:])
    return spikes.reshape(steps, *x_steps.shape[1:])


@pytest.mark.parametrize("neuron", [NEURONS[1], NEURONS[4]], ids=repr)
@pytest.mark.parametrize("shape", [(1, 4, 3, 5, 5), (6, 4, 3, 5, 5), (1, 1, 7), (6, 2, 9)],
                         ids=str)
def test_broadcast_input_repeats_one_step_or_reads_each(library, neuron, shape, rng) -> None:
    """broadcast_input = 1: X [1, N, ...] is shown at every step, X [T, N, ...] step by step."""
    steps = 6
    x = rng.normal(0.3, 1.0, shape).astype(np.float32)
    expected = reference(np.broadcast_to(x, (steps, *shape[1:])), neuron)
    np.testing.assert_array_equal(broadcast_run(x, steps, neuron, library), expected)
    np.testing.assert_array_equal(broadcast_run(x, steps, neuron, None), expected)


def test_broadcast_input_with_a_wrong_step_count_is_an_error(library) -> None:
    x = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(Exception, match="IFNode: X holds 3 steps, expected 1 or T = 5"):
        broadcast_run(x, 5, IFNeuron(), library)


# --- An independent oracle -------------------------------------------------------------------
# The neuron of docs/semantics.md, "IF neuron" written out again, element by element on
# float32 scalars: no numpy array arithmetic and none of onnx_snn's own code
# (simulate_if, if_step), so it can catch a mistake those share with the kernel or the
# function body.

def oracle(x_seq: np.ndarray, neuron: IFNeuron) -> np.ndarray:
    """Spikes of the IF neuron for ``x_seq`` [T, ...], one element and one step at a time;
    a burst or signed neuron fires k = floor(h/θ) spikes, limited to [-B or 0, B]."""
    theta = np.float32(neuron.v_threshold)
    start = np.float32(neuron.v_init) * theta
    one, zero = np.float32(1.0), np.float32(0.0)
    most = np.float32(neuron.max_spikes)
    least = -most if neuron.signed else zero
    plain = neuron.max_spikes == 1 and not neuron.signed
    steps = x_seq.shape[0]
    columns = np.asarray(x_seq, np.float32).reshape(steps, -1)
    spikes = np.empty(columns.shape, np.float32)
    with np.errstate(all="ignore"):  # inf - inf, inf + -inf: part of what is checked
        for j in range(columns.shape[1]):
            v = start
            for t in range(steps):
                h = v + columns[t, j]
                if plain:
                    s = one if h >= theta else zero
                    fired = h >= theta
                else:
                    s = np.floor(h / theta)  # float32 scalars; NaN passes both limits
                    s = least if s < least else most if s > most else s
                    fired = s != zero
                if neuron.v_reset is None:
                    v = h - s * theta
                else:
                    v = np.float32(neuron.v_reset) if fired else h
                assert type(v) is np.float32
                spikes[t, j] = s
    return spikes.reshape(x_seq.shape)


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def special_columns(neuron: IFNeuron, steps: int, width: int, rng) -> np.ndarray:
    """[steps, width] inputs: infinities, NaN, θ, one ulp below θ, -0.0, ±1e30, a
    subnormal, random values, and hand-made columns that land on θ or cross infinity."""
    theta = np.float32(neuron.v_threshold)
    below = np.nextafter(theta, np.float32(-np.inf))
    specials = np.array([np.inf, -np.inf, np.nan, theta, below, -0.0, 0.0, 1e30, -1e30,
                         theta / np.float32(2), np.float32(1e-45), -theta], np.float32)
    x = rng.normal(0.3 * theta, theta, (steps, width)).astype(np.float32)
    mask = rng.random((steps, width)) < 0.5
    x[mask] = rng.choice(specials, size=int(mask.sum()))
    made = [[np.inf] + [theta] * (steps - 1),                 # h = +inf, then θ each step
            [theta / np.float32(2)] * steps,                  # reaches θ exactly
            [below] + [np.float32(0.0)] * (steps - 1),        # stays one ulp below
            [np.nan] + [theta] * (steps - 1),
            [np.float32(1e30), np.float32(-1e30)] + [theta] * (steps - 2),
            [-0.0] * steps,
            [-np.inf, np.inf] + [theta] * (steps - 2),        # -inf + inf = NaN
            [theta * np.float32(3.5)] * steps,                # bursts of 3 or 4
            [theta * np.float32(-2.5)] * steps]               # negative bursts
    for j, column in enumerate(made):
        x[:, j] = np.array(column, np.float32)[:steps]
    return x


ORACLE_NEURONS = [IFNeuron(1.0), IFNeuron(0.37, v_init=0.5), IFNeuron(2.5, v_init=0.25),
                  IFNeuron(1.0, v_reset=0.0), IFNeuron(0.6, v_reset=-0.3, v_init=0.5),
                  IFNeuron(3.0, v_reset=0.5, v_init=1.0), IFNeuron(0.1, v_reset=-0.0),
                  IFNeuron(0.37, v_init=0.5, max_spikes=4), IFNeuron(1.0, signed=True),
                  IFNeuron(0.6, v_reset=-0.3, max_spikes=3, signed=True),
                  IFNeuron(2.5, v_reset=0.0, v_init=0.5, max_spikes=8)]


@pytest.mark.parametrize("neuron", ORACLE_NEURONS, ids=repr)
@pytest.mark.parametrize("layout", ["folded", "broadcast_one", "broadcast_each"])
def test_kernel_and_function_match_a_scalar_oracle(library, neuron, layout, rng) -> None:
    """Both engines against the oracle, bit for bit, on special values; broadcast_input
    0 (X [T·N, ...]) and 1 (X [1, N, ...] shown at every step, or X [T, N, ...])."""
    steps, rows, features = 9, 3, 13
    if layout == "broadcast_one":
        x = special_columns(neuron, 1, rows * features, rng).reshape(1, rows, features)
        expected = oracle(np.broadcast_to(x, (steps, rows, features)), neuron)
    else:
        x = special_columns(neuron, steps, rows * features, rng).reshape(steps, rows, features)
        expected = oracle(x, neuron)
    for backend in (library, None):
        if layout == "folded":
            spikes = run(x, neuron, backend)
        else:
            spikes = broadcast_run(x, steps, neuron, backend)
        assert_same_bits(spikes, expected)


def test_hard_reset_of_an_infinite_potential_is_v_reset(library) -> None:
    """h = +inf fires and resets to v_reset, so θ fires again at every later step; the
    arithmetic reset h·(1-s) + s·v_reset would leave NaN, which never fires again."""
    neuron = IFNeuron(1.0, v_reset=0.0)
    x = np.array([np.inf, 1.0, 1.0, 1.0], np.float32).reshape(4, 1, 1)
    expected = np.ones((4, 1, 1), np.float32)
    assert_same_bits(oracle(x, neuron), expected)
    assert_same_bits(run(x, neuron, library), expected)
    assert_same_bits(run(x, neuron, None), expected)


@pytest.mark.parametrize("neuron", [ORACLE_NEURONS[1], ORACLE_NEURONS[4], ORACLE_NEURONS[9]],
                         ids=repr)
def test_the_streaming_path_matches_the_oracle(library, neuron, rng) -> None:
    """A 32 MiB output (the SSE streaming path) of 37 distinct columns repeated: every
    column starts at every SSE lane, and the odd width misaligns the rows."""
    steps, features, period = 8, 2**20 + 3, 37
    pattern = special_columns(neuron, steps, period, rng)
    x = np.tile(pattern, (1, -(-features // period)))[:, :features].reshape(steps, 1, features)
    expected = np.tile(oracle(pattern, neuron), (1, -(-features // period)))[:, :features]
    for backend in (library, None):
        assert_same_bits(run(x, neuron, backend), expected.reshape(steps, 1, features))


# --- Sizes that overflow -----------------------------------------------------------------------

OVERFLOW_CHILD = """
import sys
import numpy as np
import onnxruntime as ort
from onnx_snn.snn.neurons import IFNeuron
from onnx_snn.ops.if_node_model import if_node_model

library, broadcast, dims, steps = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.register_custom_ops_library(library)
model = if_node_model({**IFNeuron().attributes(), "broadcast_input": broadcast}, list(dims))
session = ort.InferenceSession(model.SerializeToString(), options,
                               providers=["CPUExecutionProvider"])
try:
    session.run(None, {"X": np.ones(dims, np.float32), "T": np.array(steps, np.int64)})
except Exception as error:
    print("ERROR", error)
    sys.exit(0)
print("RAN")
sys.exit(3)
"""


@pytest.mark.parametrize("broadcast, dims, steps, message", [
    (1, (1, 64, 5), 2**62, "IFNode: T = 4611686018427387904 times 64 rows overflows int64"),
    (1, (1, 64, 5), 2**62 + 1, "IFNode: T = 4611686018427387905 times 64 rows overflows int64"),
    (1, (1, 2, 5), 2**63 - 1, "IFNode: T = 9223372036854775807 times 2 rows overflows int64"),
    (1, (1, 1, 5), 2**62,
     "IFNode: T = 4611686018427387904 times 5 features per step overflows int64"),
    (1, (1, 1, 1), 2**61, "IFNode: the spikes' 2305843009213693952 float32 values "
                          "(T = 2305843009213693952) overflow the byte count"),
    (0, (6, 5), 2**62, "IFNode: X has 30 elements, not a multiple of T = 4611686018427387904"),
], ids=["rows", "rows-wrap-to-64", "rows-max", "features", "bytes", "folded"])
def test_huge_timesteps_are_an_error_not_a_crash(library, broadcast, dims, steps,
                                                 message) -> None:
    """T·N, T·F and the output's bytes are checked: no wrapped size reaches the allocator
    or the loop. In a subprocess, since a crash would take pytest down with it."""
    result = subprocess.run([sys.executable, "-c", OVERFLOW_CHILD, library, str(broadcast),
                             repr(dims), str(steps)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr}"
    assert result.returncode == 0, result.stdout + result.stderr
    assert message in result.stdout


# --- Shape inference -----------------------------------------------------------------------------

def undeclared_output_model(broadcast: int, x_dims: list) -> onnx.ModelProto:
    """One IFNode whose graph declares no shape for the spikes S."""
    model = if_node_model({**IFNeuron().attributes(), "broadcast_input": broadcast}, x_dims)
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model


@pytest.mark.parametrize("broadcast, x_dims, expected", [
    (0, ["TN", 5], ["TN", 5]),
    (0, [12, 3, 4], [12, 3, 4]),
    (0, [None, 5], [str, 5]),
    (1, ["S", "N", 3, 2], [str, 3, 2]),
    (1, [1, 7, 3], [str, 3]),
], ids=str)
def test_onnxruntime_takes_the_spikes_shape_from_the_kernel(library, broadcast, x_dims,
                                                            expected) -> None:
    """The kernel's shape inference gives S the shape of X (broadcast_input = 0), or
    [T·N (unknown), X[2:]...] (= 1): onnxruntime reports it as the output's shape. An
    unknown dimension is a fresh symbol, never a fixed size, nor the name of another."""
    shape = session(undeclared_output_model(broadcast, x_dims), library).get_outputs()[0].shape
    assert len(shape) == len(expected)
    for got, want in zip(shape, expected):
        if want is str:
            assert isinstance(got, str) and got not in ("S", "N", "TN")
        else:
            assert got == want


def test_the_inferred_shape_matches_every_run(library, capfd) -> None:
    """Runs with several T: the inferred [T·N unknown, 5] never mismatches the actual
    output (onnxruntime warns about an output that does not match its known shape)."""
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.log_severity_level = 2  # warnings
    model = if_node_model({**IFNeuron().attributes(), "broadcast_input": 1}, ["S", 4, 5])
    ifnode = ort.InferenceSession(model.SerializeToString(), options,
                                  providers=["CPUExecutionProvider"])
    for steps in (1, 3, 8):
        spikes = ifnode.run(None, {"X": np.ones((1, 4, 5), np.float32),
                                   "T": np.array(steps, np.int64)})[0]
        assert spikes.shape == (4 * steps, 5)
    assert "does not match actual shape" not in capfd.readouterr().err


def test_a_node_without_the_burst_attributes_is_a_plain_neuron(library, rng) -> None:
    """Models converted before burst neurons existed lack ``max_spikes`` and ``signed``:
    the kernel reads them as 1 and 0."""
    neuron = IFNeuron(0.5, v_init=0.5)
    model = if_model([6, 7], neuron)
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name not in ("max_spikes", "signed")]
    del node.attribute[:]
    node.attribute.extend(kept)
    x = rng.normal(0.4, 1.0, (3, 2, 7)).astype(np.float32)
    spikes = session(model, library).run(None, {"X": x.reshape(6, 7), "T": np.array(3, np.int64)})
    assert_same_bits(spikes[0].reshape(3, 2, 7), oracle(x, neuron))


def test_max_spikes_below_one_is_refused_by_the_kernel(library) -> None:
    model = if_model([2, 3], IFNeuron())
    next(a for a in model.graph.node[0].attribute if a.name == "max_spikes").i = 0
    with pytest.raises(Exception, match="'max_spikes' must be in"):
        session(model, library).run(None, {"X": np.zeros((2, 3), np.float32),
                                           "T": np.array(1, np.int64)})
