"""Delayed readout: hand-computed predictions, snn_accuracy with a delay, the estimate."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import mlp_model

from onnx_snn import HookFactory, OnnxSnnError, convert
from onnx_snn.measure.evaluation import snn_accuracy
from onnx_snn.runtime import SpikingOutput, SpikingSession
from onnx_snn.runtime.predictions import delayed_predictions
from onnx_snn.runtime.readout import estimate_readout_delay

# [T=4, N=2, C=2]. Sample 0 gets a big class-0 output at step 1, then class 1 wins
# every later step: the plain readout stays at 0, a delay lets class 1 win.
# Sample 1 is predicted 1 for two steps, then 0, with or without a delay.
PER_STEP = np.array([[[5, 0], [0, 1]],
                     [[0, 1], [0, 1]],
                     [[0, 1], [3, 0]],
                     [[0, 1], [2, 0]]], dtype=np.float32)


def test_delayed_predictions_by_hand() -> None:
    # Sample 0, delay 1: t=1 falls back to step 1 -> 0; t=2..4 sum steps 2..t: [0, t-1] -> 1.
    assert delayed_predictions(PER_STEP, 1).T.tolist() == [[0, 1, 1, 1], [1, 1, 0, 0]]
    # Delay 2: t=1, 2 fall back to the sums 1..t ([5, 0], [5, 1]) -> 0, not an empty window.
    assert delayed_predictions(PER_STEP, 2).T.tolist() == [[0, 0, 1, 1], [1, 1, 0, 0]]
    # Delay 3: only t=4 is delayed (step 4 alone).
    assert delayed_predictions(PER_STEP, 3).T.tolist() == [[0, 0, 0, 1], [1, 1, 0, 0]]


def test_delay_zero_is_the_plain_cumulative_readout() -> None:
    plain = np.cumsum(PER_STEP, axis=0).argmax(axis=-1)
    assert plain.T.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0]]
    assert np.array_equal(delayed_predictions(PER_STEP, 0), plain)
    assert np.array_equal(SpikingOutput({"y": PER_STEP}).predictions(), plain)


@pytest.mark.parametrize("delay", [4, 5, 100])
def test_delay_of_t_or_more_falls_back_to_no_delay_everywhere(delay) -> None:
    assert np.array_equal(delayed_predictions(PER_STEP, delay),
                          delayed_predictions(PER_STEP, 0))


def test_delayed_predictions_match_a_loop(rng) -> None:
    """Property: every step t and delay t0 against sums taken one window at a time,
    with extra axes between N and the classes."""
    per_step = rng.normal(size=(9, 5, 3, 4)).astype(np.float32)
    for delay in range(11):
        expected = np.stack([
            per_step[delay if t > delay else 0:t].sum(axis=0, dtype=np.float64).argmax(axis=-1)
            for t in range(1, 10)])
        got = delayed_predictions(per_step, delay)
        assert got.shape == (9, 5, 3)
        assert np.array_equal(got, expected)
        assert np.array_equal(SpikingOutput({"y": per_step}).predictions(delay), expected)


@pytest.mark.parametrize("delay", [-1, 1.5, True, "2", None, np.float32(1)])
def test_bad_delays_raise(delay) -> None:
    with pytest.raises(OnnxSnnError, match="delay"):
        delayed_predictions(PER_STEP, delay)
    with pytest.raises(OnnxSnnError, match="delay"):
        SpikingOutput({"y": PER_STEP}).predictions(delay)


def test_numpy_integer_delay_is_accepted() -> None:
    assert np.array_equal(delayed_predictions(PER_STEP, np.int64(1)),
                          delayed_predictions(PER_STEP, 1))


@pytest.mark.parametrize("per_step", [np.zeros((0, 2, 2)), np.zeros(4), np.zeros((3, 2, 0))])
def test_bad_per_step_shapes_raise(per_step) -> None:
    with pytest.raises(OnnxSnnError, match="per-step"):
        delayed_predictions(per_step, 1)


@pytest.fixture(scope="module")
def mlp_snn():
    """A converted MLP, its data and the ANN's predictions on that data."""
    rng = np.random.default_rng(7)
    ann = mlp_model([12, 20, 16, 4], seed=3)
    x = rng.normal(size=(60, 12)).astype(np.float32)
    session = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"])
    ann_labels = session.run(None, {"x": x})[0].argmax(axis=-1)
    snn = convert(ann, x, hook_factory=HookFactory("99%"), progress=False).model
    return ann, SpikingSession(snn), x, ann_labels


def numpy_accuracy(per_step: np.ndarray, labels: np.ndarray, t: int, delay: int) -> float:
    window = per_step[delay if t > delay else 0:t]
    return float((window.sum(axis=0, dtype=np.float64).argmax(axis=-1) == labels).mean())


@pytest.mark.parametrize("delay", [0, 2, 5])
def test_snn_accuracy_with_delay_matches_numpy(mlp_snn, delay) -> None:
    _, session, x, labels = mlp_snn
    steps = [6, 7, 16]
    per_step = session.run(x, max(steps)).per_step
    expected = {t: numpy_accuracy(per_step, labels, t, delay) for t in steps}
    assert snn_accuracy(session, x, labels, steps, batch_size=25, readout_delay=delay) \
        == pytest.approx(expected, abs=0)


def test_snn_accuracy_refuses_a_bad_delay(mlp_snn) -> None:
    _, session, x, labels = mlp_snn
    with pytest.raises(OnnxSnnError, match="readout delay"):
        snn_accuracy(session, x, labels, [4], readout_delay=-2)


@pytest.mark.parametrize("delay, steps", [(3, [3, 8]), (5, [8, 4])])
def test_snn_accuracy_refuses_a_delay_of_t_or_more(mlp_snn, delay, steps) -> None:
    """A delay that leaves no step to read at some T is refused, not silently ignored."""
    _, session, x, labels = mlp_snn
    with pytest.raises(OnnxSnnError, match=rf"readout delay {delay} .* T = {min(steps)}"):
        snn_accuracy(session, x, labels, steps, readout_delay=delay)


def brute_force_delay(per_step: np.ndarray, reference: np.ndarray, max_delay: int) -> int:
    agreement = [(per_step[d:].sum(axis=0, dtype=np.float64).argmax(axis=-1) == reference).sum()
                 for d in range(max_delay + 1)]
    return int(np.argmax(agreement))  # first maximum: the smallest delay wins ties


@pytest.mark.parametrize("labels", ["ann", 0, 1, 2])
@pytest.mark.parametrize("max_delay", [None, 11])
def test_estimate_matches_a_brute_force_search(mlp_snn, labels, max_delay) -> None:
    _, session, x, ann_labels = mlp_snn
    steps = 12
    reference = ann_labels if labels == "ann" else \
        np.random.default_rng(labels).integers(0, 4, size=len(x))
    per_step = session.run(x, steps).per_step
    expected = brute_force_delay(per_step, reference, steps // 2 if max_delay is None
                                 else max_delay)
    assert estimate_readout_delay(session, x, steps, reference, max_delay=max_delay,
                                  batch_size=7) == expected


def test_estimate_with_ann_equals_estimate_with_ann_labels(mlp_snn) -> None:
    ann, session, x, ann_labels = mlp_snn
    delays = []
    for steps in (4, 7, 10, 14):
        delays.append(estimate_readout_delay(session, x, steps, ann=ann, batch_size=16,
                                             max_delay=steps - 1))
        assert delays[-1] == estimate_readout_delay(session, x, steps, reference=ann_labels,
                                                    max_delay=steps - 1)
    assert any(delays), "expected some T where a delay agrees better with the ANN"


def test_estimate_ties_go_to_the_smallest_delay(mlp_snn) -> None:
    """With one sample whose prediction never changes, every delay agrees equally."""
    _, session, x, _ = mlp_snn
    per_step = session.run(x, 6).per_step
    stable = [i for i in range(len(x))
              if len({int(delayed_predictions(per_step[:, i:i + 1], d)[-1, 0])
                      for d in range(4)}) == 1]
    assert stable, "expected a sample whose prediction does not depend on the delay"
    i = stable[0]
    reference = delayed_predictions(per_step[:, i:i + 1], 0)[-1]
    assert estimate_readout_delay(session, x[i:i + 1], 6, reference, max_delay=3) == 0


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"),
    ({"reference": np.zeros(60, np.int64), "ann": "ann"}, "exactly one"),
    ({"reference": np.zeros(59, np.int64)}, "one per sample"),
    ({"reference": np.zeros(60, np.float32)}, "integers"),
    ({"reference": np.zeros(60, np.int64), "max_delay": 8}, "below the number of time steps"),
    ({"reference": np.zeros(60, np.int64), "max_delay": -1}, "max_delay"),
    ({"reference": np.zeros(60, np.int64), "batch_size": 0}, "batch size"),
])
def test_estimate_refuses_bad_settings(mlp_snn, kwargs, match) -> None:
    ann, session, x, _ = mlp_snn
    if kwargs.get("ann") == "ann":
        kwargs = {**kwargs, "ann": ann}
    with pytest.raises(OnnxSnnError, match=match):
        estimate_readout_delay(session, x, 8, **kwargs)


def test_digits_cnn_with_the_estimated_delay() -> None:
    """End to end on the digits BN-CNN: estimate t0 on the training (calibration)
    data for T = 8 and 16 and report the accuracies with and without it. On the
    calibration data the delay maximises accuracy at T, so it cannot be worse there;
    on test data nothing is guaranteed, so it is only printed."""
    import torch

    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export.torch import export_torch

    x_train, y_train, x_test, y_test = load_digits_split()
    ann = export_torch(train_digits_cnn(x_train, y_train, epochs=10),
                       torch.from_numpy(x_train[:2]), dynamo=False)
    snn = convert(ann, x_train, hook_factory=HookFactory("99.9%"), batch_size=100,
                  progress=False)
    session = SpikingSession(snn.model)
    for steps in (8, 16):
        delay = estimate_readout_delay(session, x_train, steps, reference=y_train)
        ann_delay = estimate_readout_delay(session, x_train, steps, ann=ann)
        train = {d: snn_accuracy(session, x_train, y_train, [steps], readout_delay=d)[steps]
                 for d in (0, delay)}
        test = {d: snn_accuracy(session, x_test, y_test, [steps], readout_delay=d)[steps]
                for d in (0, delay)}
        print(f"\nT={steps}: estimated delay {delay} (from the ANN: {ann_delay}); "
              f"train {train[0]:.4f} -> {train[delay]:.4f}, "
              f"test {test[0]:.4f} -> {test[delay]:.4f}")
        assert 0 <= delay <= steps // 2
        assert train[delay] >= train[0]
