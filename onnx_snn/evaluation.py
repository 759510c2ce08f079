"""Accuracy of a spiking model at several T from one run, and of the ANN."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from onnx_snn.data import check_batch_size
from onnx_snn.errors import OnnxSnnError
from onnx_snn.modelio import ModelLike
from onnx_snn.readout import check_delay
from onnx_snn.runtime import AnnSession, SpikingSession, check_timesteps


def _check_labels(x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
    check_batch_size(batch_size)
    y = np.asarray(y)
    if y.size == 0:
        raise OnnxSnnError("no samples to evaluate")
    if y.ndim != 1 or y.shape[0] != np.shape(x)[0] or y.dtype.kind not in "iu":
        raise OnnxSnnError(f"labels must be integers, one per sample: got shape "
                           f"{list(y.shape)} ({y.dtype}) for {np.shape(x)[0]} samples")
    return y


def snn_accuracy(model: ModelLike | SpikingSession, x: np.ndarray, y: np.ndarray,
                 timesteps: Sequence[int], batch_size: int = 256,
                 progress: bool = False, readout_delay: int = 0) -> dict[int, float]:
    """Accuracy after each T in ``timesteps`` (direct encoding), from one run at max(T).

    The prediction after t steps is the argmax of the sum of outputs 1..t;
    outputs at step t do not depend on later steps, so one run serves every T.
    ``readout_delay`` t0 > 0 uses the delayed readout (``onnx_snn.readout``):
    the sum of outputs t0+1..T, or of outputs 1..T where T <= t0.
    """
    readout_delay = check_delay(readout_delay)
    session = model if isinstance(model, SpikingSession) else SpikingSession(model)
    steps = sorted({check_timesteps(t) for t in timesteps})
    y = _check_labels(x, y, batch_size)
    correct = np.zeros(len(steps), dtype=np.int64)
    starts = range(0, len(y), batch_size)
    for start in tqdm(starts, desc="evaluating", unit="batch", disable=not progress, leave=False):
        predictions = session.run(x[start:start + batch_size], steps[-1]).predictions(
            readout_delay)
        labels = y[start:start + batch_size]
        correct += [(predictions[t - 1] == labels).sum() for t in steps]
    return {t: float(c) / len(y) for t, c in zip(steps, correct)}


def ann_accuracy(model: ModelLike, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Accuracy of the original ANN (argmax of its first output)."""
    y = _check_labels(x, y, batch_size)
    ann = AnnSession(model)
    correct = 0
    for start in range(0, len(y), batch_size):
        classes = ann.classes(x[start:start + batch_size], where=f"samples {start}-")
        correct += int((classes == y[start:start + batch_size]).sum())
    return correct / len(y)
