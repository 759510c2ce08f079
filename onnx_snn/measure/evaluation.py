"""Accuracy of a spiking model at several T from one run, and of the ANN.

Both read the data batch by batch (``onnx_snn.io.data.labelled_batches``: arrays
with labels, an .npz with ``y``, (input, label) pairs, a DataLoader), so memory
stays at one batch. The scored output is chosen once
(``onnx_snn.runtime.predictions.choose_output``):
the first output with class scores [N, classes] (singleton axes around the
classes allowed: [N, classes, 1, 1]), or else an integer label output; ``output=``
picks another. Labels are class indices [N] or one-hot rows [N, classes]. An ANN
with a fixed batch runs in chunks of it (``onnx_snn.runtime.sessions.AnnSession``).
For outputs that are not class scores, or data without labels, see
``onnx_snn.measure.agreement.ann_fidelity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import LabelledBatch, check_batch_size, labelled_batches
from onnx_snn.io.models import ModelLike, load_model
from onnx_snn.runtime.cluster import Cluster, map_batches
from onnx_snn.runtime.predictions import ann_predictions, check_delay, choose_output
from onnx_snn.runtime.sessions import (
    AnnSession,
    SpikingSession,
    check_timesteps_list,
)
from onnx_snn.runtime.streaming import open_session


def check_delay_below(delay: int, steps: Sequence[int]) -> None:
    """A readout delay must leave steps to read at every T."""
    short = [t for t in steps if t <= delay]
    if short:
        raise OnnxSnnError(f"readout delay {delay} leaves nothing to read at T = {short[0]}: "
                           "the delay must be below every T")


class AccuracyWorker:
    """Per batch: how many predictions are right after each of ``steps`` (sorted)."""

    def __init__(self, model: ModelLike | SpikingSession, steps: list[int],
                 readout_delay: int = 0, output: str | None = None) -> None:
        self.session = model if isinstance(model, SpikingSession) else open_session(model)
        self.scored = choose_output(self.session.output_types, output)
        self.steps = steps
        self.readout_delay = readout_delay

    def __call__(self, batch: LabelledBatch) -> tuple[np.ndarray, int]:
        self.scored.check_labels(batch.labels, batch.start)
        predictions = self.session.run(batch.feed, self.steps[-1]).predictions(
            self.readout_delay, self.scored.name)
        return (np.array([(predictions[t - 1] == batch.labels).sum() for t in self.steps],
                         dtype=np.int64), len(batch.labels))


def snn_accuracy(model: ModelLike | SpikingSession, data: Any, labels: Any = None,
                 timesteps: Sequence[int] = (64,), batch_size: int = 256,
                 progress: bool = False, readout_delay: int = 0,
                 output: str | None = None, cluster: Cluster | None = None
                 ) -> dict[int, float]:
    """Accuracy after each T in ``timesteps`` (direct encoding), from one run at max(T).

    ``data``: inputs in any form ``labelled_batches`` takes, with ``labels``
    when they are not part of it. The prediction after t steps is the argmax of
    the sum of outputs 1..t; outputs at step t do not depend on later steps, so
    one run serves every T. ``readout_delay`` t0 > 0 uses the delayed readout
    (``onnx_snn.runtime.readout``): the sum of outputs t0+1..T; it must be below every T.
    ``cluster``: run the batches on its Ray workers (the same counts, summed).
    """
    readout_delay = check_delay(readout_delay)
    steps = check_timesteps_list(timesteps)
    check_delay_below(readout_delay, steps)
    local = AccuracyWorker(model, steps, readout_delay, output)  # checks the model here
    if cluster is None:
        def recipe() -> AccuracyWorker:
            return local  # the session is already open
    elif isinstance(model, SpikingSession):
        raise OnnxSnnError("workers open their own sessions: give the model (a path or "
                           "ModelProto), not a SpikingSession")
    else:
        recipe = partial(AccuracyWorker, load_model(model), steps, readout_delay, output)
    correct = np.zeros(len(steps), dtype=np.int64)
    total = 0
    for right, count in map_batches(recipe, data, local.session.batch_specs,
                                    check_batch_size(batch_size), cluster, labelled=True,
                                    labels=labels, desc="evaluating", progress=progress):
        correct += right
        total += count
    return {t: float(c) / total for t, c in zip(steps, correct)}


def ann_accuracy(model: ModelLike, data: Any, labels: Any = None, batch_size: int = 256,
                 output: str | None = None) -> float:
    """Accuracy of the original ANN on ``data`` (as ``snn_accuracy`` takes it)."""
    ann = AnnSession(model)
    scored = choose_output(ann.output_types, output)
    ann.outputs = [scored.name]
    correct = total = 0
    for batch in labelled_batches(data, ann.specs, batch_size, labels):
        scored.check_labels(batch.labels, batch.start)
        values = ann.run(batch.feed, where=f"samples {batch.start}-"
                                           f"{batch.start + len(batch.labels) - 1}")[0]
        correct += int((ann_predictions(scored, values) == batch.labels).sum())
        total += len(batch.labels)
    return correct / total
