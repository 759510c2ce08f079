"""The time ops (RunningSum, RunningMean, Difference, StepDifference): the native
kernels and the function bodies agree bit for bit with a float32 loop written here.

Without the library these tests skip, unless ``ONNX_SNN_REQUIRE_NATIVE=1`` (set by
``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_native import session

from onnx_snn.ops.time_ops import TIME_OPS, time_op_model
from onnx_snn.runtime import session_options


def loop_reference(op_type: str, rows: np.ndarray) -> np.ndarray:
    """The op on ``rows`` [T, F], one float32 operation at a time
    (docs/semantics.md, "Time-difference ops")."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are part of the test
        return _loop(op_type, rows)


def _loop(op_type: str, rows: np.ndarray) -> np.ndarray:
    out = np.empty_like(rows)
    total = np.zeros(rows.shape[1:], np.float32)
    count = np.float32(0)
    for t, row in enumerate(rows):
        previous_count = count
        count = np.float32(count + np.float32(1))
        total = row.copy() if t == 0 else np.float32(total + row)
        before = np.zeros_like(row) if t == 0 else rows[t - 1]
        if op_type == "RunningSum":
            out[t] = total
        elif op_type == "RunningMean":
            out[t] = total / count
        elif op_type == "Difference":
            out[t] = row - before
        else:  # StepDifference
            out[t] = row * count - before * previous_count
    return out


def hostile(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values over 12 orders of magnitude, with ±0, ±inf, NaN and near-overflow."""
    x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)
    x = x.astype(np.float32)
    special = np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-40], np.float32)
    x.flat[rng.choice(x.size, min(x.size, 40), replace=False)] = rng.choice(special, min(
        x.size, 40))
    return x


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a.view(np.uint32) == b.view(np.uint32))
                                              | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("op_type", TIME_OPS)
@pytest.mark.parametrize("steps, shape", [(1, (4, 3)), (5, (5 * 3, 2, 7)), (64, (64 * 2, 3000)),
                                          (3, (6,))], ids=str)
def test_kernel_and_function_match_a_float32_loop(library, op_type, steps, shape, rng) -> None:
    """3000 features split into two tasks of the kernel's thread pool."""
    x = hostile(rng, shape)
    expected = loop_reference(op_type, x.reshape(steps, -1)).reshape(shape)
    model = time_op_model(op_type, [None] * len(shape))
    feeds = {"X": x, "T": np.array(steps, np.int64)}
    assert same_bits(session(model, library).run(None, feeds)[0], expected)
    assert same_bits(session(model, None).run(None, feeds)[0], expected)


@pytest.mark.parametrize("op_type", TIME_OPS)
def test_sessions_run_the_kernel(library, op_type, tmp_path: Path) -> None:
    """onnx_snn's sessions register the library: the profile shows the op, no CumSum."""
    options = session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    probe = ort.InferenceSession(time_op_model(op_type, [4, 2]).SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
    probe.run(None, {"X": np.ones((4, 2), np.float32), "T": np.array(2, np.int64)})
    events = json.loads(Path(probe.end_profiling()).read_text())
    ran = {event.get("args", {}).get("op_name") for event in events}
    assert op_type in ran and "CumSum" not in ran


@pytest.mark.parametrize("op_type", TIME_OPS)
def test_timesteps_that_do_not_divide_the_input_are_an_error(library, op_type) -> None:
    op = session(time_op_model(op_type, [6, 5]), library)
    with pytest.raises(Exception, match=f"{op_type}: X has 30 elements, not a multiple of T = 4"):
        op.run(None, {"X": np.zeros((6, 5), np.float32), "T": np.array(4, np.int64)})


def test_the_output_shape_is_the_inputs(library) -> None:
    """The kernel tells onnxruntime Y has X's shape, symbols included."""
    model = time_op_model("RunningMean", ["TN", 3, None])
    model.graph.output[0].type.tensor_type.ClearField("shape")
    shape = session(model, library).get_outputs()[0].shape
    assert shape[:2] == ["TN", 3] and isinstance(shape[2], str)
