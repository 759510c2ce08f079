"""The native IFNode kernel: bit-exact with the function body and numpy, and its loading.

Without the library (a build that failed at install time) these tests skip,
unless ``ONNX_SNN_REQUIRE_NATIVE=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import onnx
import pytest
from test_ifnode import if_model, reference

from onnx_snn.neurons import IFNeuron
from onnx_snn.ops.function import if_node_model
from onnx_snn.ops.native import kernel_runs, native_library_path, native_status

REQUIRE = os.environ.get("ONNX_SNN_REQUIRE_NATIVE") == "1"


@pytest.fixture(scope="module")
def library() -> str:
    status = native_status()
    if not status.loadable:
        if REQUIRE:
            pytest.fail(f"native kernels required: {status.reason}")
        pytest.skip(status.reason)
    return str(status.library)


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
    assert result.stderr.count("native IFNode kernels unavailable") == 1
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
