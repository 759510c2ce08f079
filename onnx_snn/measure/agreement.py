"""How closely a spiking model follows its ANN, on data without labels.

Both run on the same batches; each output of the SNN, averaged over the first T
steps, is compared with the ANN's (``ann_fidelity``, per T from one run):

- the relative error Σ|mean SNN − ANN| / Σ|ANN| (float outputs);
- the Pearson correlation of mean SNN against ANN values (float outputs);
- the agreement: for float outputs whose last axis has >= 2 entries, the fraction
  of positions whose argmax along the last axis is the ANN's (class scores
  [N, classes, 1, 1] are read as [N, classes]); for integer outputs (labels), the
  fraction of values equal to the ANN's.

That is the view for outputs that are not class scores (boxes, maps, CTC
sequences, regressions): ``onnx-snn eval`` and ``report`` show it when there are
no labels to score. ``ann_agreement`` is the same comparison for one output at one
T, which ``--preset auto`` (``onnx_snn.search``) ranks method combinations by.

An ANN whose inputs fix the batch (batch 1, as many exporters write) runs in
chunks of that batch (``onnx_snn.runtime.sessions.AnnSession``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import batches, check_batch_size
from onnx_snn.io.models import ModelLike
from onnx_snn.runtime.predictions import ScoredOutput, as_class_scores, choose_output
from onnx_snn.runtime.sessions import (
    AnnSession,
    SpikingSession,
    check_timesteps,
    check_timesteps_list,
)
from onnx_snn.runtime.streaming import open_session


class Correlation:
    """Streaming Pearson correlation of paired samples: (count, means, co-moments)
    merged batch by batch with Chan's formula, which does not cancel like raw
    power sums do."""

    def __init__(self) -> None:
        self.count = 0
        self.means = np.zeros(2)
        self.moments = np.zeros(3)  # Σ(a-ā)², Σ(b-b̄)², Σ(a-ā)(b-b̄)

    @staticmethod
    def batch_moments(a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """One batch's (count, means, co-moments), for ``merge``."""
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        if a.size == 0:
            return 0, np.zeros(2), np.zeros(3)
        means = np.array([a.mean(), b.mean()])
        da, db = a - means[0], b - means[1]
        # elementwise products and numpy's pairwise sums, not BLAS dot products, whose
        # rounding depends on how many threads the BLAS uses (one in a Ray worker)
        return a.size, means, np.array([np.sum(da * da), np.sum(db * db), np.sum(da * db)])

    def merge(self, n: int, means: np.ndarray, moments: np.ndarray) -> None:
        """Add a batch's ``batch_moments``."""
        if n == 0:
            return
        delta = means - self.means
        total = self.count + n
        self.moments += moments + np.array([delta[0] ** 2, delta[1] ** 2, delta[0] * delta[1]]) \
            * self.count * n / total
        self.means += delta * n / total
        self.count = total

    def value(self) -> float | None:
        var_a, var_b, cov = self.moments
        if self.count < 2 or var_a <= 0 or var_b <= 0:
            return None
        return float(cov / np.sqrt(var_a * var_b))


@dataclass
class OutputTally:
    """One output's running sums against the ANN, at each of ``steps``."""

    name: str
    steps: list[int]
    floats: bool | None = None
    difference: np.ndarray = field(init=False)
    magnitude: float = 0.0
    agree: np.ndarray = field(init=False)
    positions: int = 0
    correlations: list[Correlation] = field(init=False)

    def __post_init__(self) -> None:
        self.difference = np.zeros(len(self.steps))
        self.agree = np.zeros(len(self.steps), dtype=np.int64)
        self.correlations = [Correlation() for _ in self.steps]

    def add(self, per_step: np.ndarray, reference: np.ndarray) -> None:
        """One batch: the SNN's output per step [T, ...] and the ANN's [...]."""
        if per_step.shape[1:] != reference.shape:
            raise OnnxSnnError(f"output '{self.name}' is {list(per_step.shape[1:])} per step in "
                               f"the SNN but {list(reference.shape)} in the ANN: is the ANN "
                               "the model this SNN was converted from?")
        self.floats = per_step.dtype.kind == "f"
        if not self.floats:  # labels: the conversion already reads the scores summed
            for k, t in enumerate(self.steps):
                self.agree[k] += int((per_step[t - 1] == reference).sum())
            self.positions += reference.size
            return
        cumulative = np.cumsum(per_step, axis=0, dtype=np.float64)
        reference = reference.astype(np.float64)
        self.magnitude += float(np.abs(reference).sum())
        target = as_class_scores(reference)
        arg_target = target.argmax(axis=-1) if target.ndim >= 2 and target.shape[-1] >= 2 \
            else None
        for k, t in enumerate(self.steps):
            mean = cumulative[t - 1] / t
            self.difference[k] += float(np.abs(mean - reference).sum())
            self.correlations[k].merge(*Correlation.batch_moments(reference, mean))
            if arg_target is not None:
                self.agree[k] += int((as_class_scores(mean).argmax(axis=-1)
                                      == arg_target).sum())
        self.positions += 0 if arg_target is None else arg_target.size

    def merge(self, other: OutputTally) -> None:
        """Add another batch's tally (the same output and steps)."""
        self.floats = other.floats if self.floats is None else self.floats
        self.difference += other.difference
        self.magnitude += other.magnitude
        self.agree += other.agree
        self.positions += other.positions
        for mine, theirs in zip(self.correlations, other.correlations):
            mine.merge(theirs.count, theirs.means, theirs.moments)

    def values(self) -> dict[str, list[float | None]]:
        """{error, correlation, agreement}: one value (or None) per step."""
        count = len(self.steps)
        return {
            "error": [float(d) / max(self.magnitude, 1e-30) for d in self.difference]
            if self.floats else [None] * count,
            "correlation": [c.value() for c in self.correlations] if self.floats
            else [None] * count,
            "agreement": [int(a) / self.positions for a in self.agree] if self.positions
            else [None] * count}


@dataclass(frozen=True)
class Fidelity:
    """Each SNN output against the ANN after each of ``timesteps`` (``ann_fidelity``):
    ``outputs`` maps an output name to {error, correlation, agreement}, each a list
    with one value (None where it does not apply) per T."""

    timesteps: list[int]
    samples: int
    outputs: dict[str, dict[str, list[float | None]]]

    def to_dict(self) -> dict[str, Any]:
        return {"timesteps": self.timesteps, "samples": self.samples,
                "outputs": {name: {key: {str(t): value for t, value in zip(self.timesteps, row)}
                                   for key, row in values.items()}
                            for name, values in self.outputs.items()}}

    def lines(self) -> list[str]:
        """A table: one line per output and T."""
        width = max([len("output"), *map(len, self.outputs)])
        lines = [f"{'output':<{width}}  {'T':>5}  {'rel. error':>10}  {'correlation':>11}  "
                 f"{'agreement':>9}"]
        for name, values in self.outputs.items():
            for k, t in enumerate(self.timesteps):
                error, r, agree = (values[key][k] for key in ("error", "correlation",
                                                              "agreement"))
                lines.append(f"{name:<{width}}  {t:>5}  "
                             f"{'n/a' if error is None else f'{error:.4f}':>10}  "
                             f"{'n/a' if r is None else f'{r:.4f}':>11}  "
                             f"{'n/a' if agree is None else f'{agree:.2%}':>9}")
        return lines


def _compare(session: SpikingSession, ann: ModelLike, data: Any, names: list[str],
             steps: list[int], batch_size: int, max_samples: int | None = None
             ) -> tuple[dict[str, OutputTally], int]:
    """Run the SNN for max(steps) and the ANN on the same batches; tally ``names``."""
    network = AnnSession(ann, names)
    missing = [name for name in names if name not in network.output_types]
    if missing:
        raise OnnxSnnError(f"the ANN has no output {', '.join(map(repr, missing))}: is it the "
                           "model this SNN was converted from?")
    tallies = {name: OutputTally(name, steps) for name in names}
    samples = 0
    for feed in batches(data, session.batch_specs, check_batch_size(batch_size)):
        if max_samples is not None:
            if samples >= max_samples:
                break
            feed = {key: value[:max_samples - samples] for key, value in feed.items()}
        rows = len(next(iter(feed.values())))
        references = network.run(feed, where=f"samples {samples}-{samples + rows - 1}")
        per_step = session.run(feed, steps[-1]).outputs
        for name, reference in zip(names, references):
            tallies[name].add(per_step[name], reference)
        samples += rows
    if samples == 0:
        raise OnnxSnnError("no samples to compare the SNN with the ANN on")
    return tallies, samples


def ann_fidelity(snn: ModelLike | SpikingSession, ann: ModelLike, data: Any,
                 timesteps: Any = (64,), batch_size: int = 256,
                 outputs: list[str] | None = None) -> Fidelity:
    """Every tensor output of the SNN (or ``outputs``) against the ANN after each T in
    ``timesteps``, from one run at max(T), on ``data`` (inputs only, any form
    ``onnx_snn.io.data`` reads). See the module doc for the three measures."""
    session = snn if isinstance(snn, SpikingSession) else open_session(snn)
    steps = check_timesteps_list(timesteps)
    names = outputs or [name for name, (dtype, _) in session.output_types.items()
                        if dtype is not None]
    if not names:
        raise OnnxSnnError("the SNN has no tensor output to compare with the ANN")
    tallies, samples = _compare(session, ann, data, names, steps, batch_size)
    return Fidelity(steps, samples, {name: tally.values() for name, tally in tallies.items()})


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
    reads; the first ``max_samples`` when given) at ``timesteps`` steps: one output's
    ``ann_fidelity`` error, and its agreement when it holds class scores or labels."""
    session = snn if isinstance(snn, SpikingSession) else SpikingSession(snn)
    timesteps = check_timesteps(timesteps)
    compared = _compared_output(session, output)
    name = compared if isinstance(compared, str) else compared.name
    tallies, samples = _compare(session, ann, data, [name], [timesteps], batch_size,
                                max_samples)
    values = tallies[name].values()
    return Agreement(timesteps, samples, name,
                     None if isinstance(compared, str) else values["agreement"][0],
                     values["error"][0])
