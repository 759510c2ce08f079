"""How closely a spiking model follows its ANN at one T, on data without labels.

``ann_agreement`` runs both on the same batches and compares one output: the
fraction of samples whose SNN prediction after T steps is the ANN's (for class
scores or labels), and the relative error of the SNN's mean output over the T
steps, Σ|mean SNN − ANN| / Σ|ANN| (for any float output). ``--preset auto``
(``onnx_snn.search``) ranks method combinations by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import batches, check_batch_size
from onnx_snn.io.models import ModelLike
from onnx_snn.runtime.predictions import ScoredOutput, ann_predictions, choose_output
from onnx_snn.runtime.sessions import AnnSession, SpikingSession, check_timesteps


@dataclass(frozen=True)
class Agreement:
    """The SNN against the ANN at ``timesteps`` on ``samples`` samples: ``agreement``
    (None when the compared output is neither class scores nor labels) and ``error``
    (None when it holds labels)."""

    timesteps: int
    samples: int
    output: str
    agreement: float | None
    error: float | None

    def rank(self) -> tuple[float, float]:
        """A sort key, larger is better: agreement first, then the smaller error."""
        return (-np.inf if self.agreement is None else self.agreement,
                -np.inf if self.error is None else -self.error)

    def describe(self) -> str:
        parts = [f"agreement {self.agreement:.2%}" if self.agreement is not None else "",
                 f"error {self.error:.4f}" if self.error is not None else ""]
        return ", ".join(part for part in parts if part)


def _compared_output(session: SpikingSession, output: str | None) -> ScoredOutput | str:
    """The scored output, or, for a model with no classification output, its first
    float output (compared by error alone)."""
    try:
        return choose_output(session.output_types, output)
    except OnnxSnnError:
        if output is not None:
            raise
    floats = [name for name, (dtype, _) in session.output_types.items()
              if dtype is not None and dtype.kind == "f"]
    if not floats:
        raise OnnxSnnError("the model has no float or label output to compare with the ANN")
    return floats[0]


def ann_agreement(snn: ModelLike | SpikingSession, ann: ModelLike, data: Any, timesteps: int,
                  output: str | None = None, batch_size: int = 256,
                  max_samples: int | None = None) -> Agreement:
    """The SNN against the ANN on ``data`` (inputs only, any form ``onnx_snn.io.data``
    reads; the first ``max_samples`` when given) at ``timesteps`` steps."""
    session = snn if isinstance(snn, SpikingSession) else SpikingSession(snn)
    timesteps = check_timesteps(timesteps)
    compared = _compared_output(session, output)
    name = compared if isinstance(compared, str) else compared.name
    scored = None if isinstance(compared, str) else compared
    network = AnnSession(ann, [name])
    samples = agree = 0
    difference = magnitude = 0.0
    for feed in batches(data, session.batch_specs, check_batch_size(batch_size)):
        if max_samples is not None:
            if samples >= max_samples:
                break
            feed = {key: value[:max_samples - samples] for key, value in feed.items()}
        reference = network.run(feed)[0]
        per_step = session.run(feed, timesteps).outputs[name]
        samples += len(reference)
        if scored is not None:  # a label output already reads the scores summed over steps
            predicted = per_step[-1] if scored.labels else \
                per_step.sum(axis=0, dtype=np.float64).argmax(axis=-1)
            agree += int((predicted == ann_predictions(scored, reference)).sum())
        if per_step.dtype.kind == "f":
            mean = per_step.astype(np.float64).mean(axis=0)
            difference += float(np.abs(mean - reference).sum())
            magnitude += float(np.abs(reference.astype(np.float64)).sum())
    if samples == 0:
        raise OnnxSnnError("no samples to compare the SNN with the ANN on")
    error = None if per_step.dtype.kind != "f" else difference / max(magnitude, 1e-30)
    return Agreement(timesteps, samples, name,
                     None if scored is None else agree / samples, error)
