"""Predictions from a spiking model's outputs (``SpikingOutput``, one run's outputs per
step): which output is scored, and the delayed readout, which ignores the output of
the first steps.

A converted model outputs each ANN output per time step, [T, N, classes]. The
plain prediction after t steps is the argmax of the sum of outputs 1..t. In the
first steps the membrane potentials are still charging, so those outputs are
mostly noise; a *delayed readout* with delay t0 predicts, after t steps, the
argmax of the sum of outputs t0+1..t instead (Rueckauer et al. 2017, "Conversion
of continuous-valued deep networks to efficient event-driven networks for image
classification", Frontiers in Neuroscience 11:682; Hwang et al. 2021, "Low-latency
spiking neural networks using pre-charged membrane potential and delayed
evaluation", Frontiers in Neuroscience 15:629000). It is a post-training change
of the readout only: the model and its spikes are unchanged.

For t <= t0 the delayed window t0+1..t is empty; the prediction then falls back
to no delay (the sum of outputs 1..t), so every step has a prediction.

``onnx_snn.runtime.readout.estimate_readout_delay`` picks t0 from calibration
data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.validation import check_non_negative_int


def check_delay(delay: Any, what: str = "readout delay") -> int:
    """The delay as an int >= 0; ``OnnxSnnError`` otherwise."""
    return check_non_negative_int(delay, what)


def class_axis(sample_shape: tuple) -> int | None:
    """The class axis of per-sample scores ``sample_shape`` (the shape after N): the one
    axis not known to be 1, so [classes], [classes, 1, 1] and [1, classes] all score
    (a DenseNet or SqueezeNet exported as [N, classes, 1, 1]); None when no single
    axis is left (a map, a sequence, boxes)."""
    axes = [k for k, dim in enumerate(sample_shape) if dim != 1]
    return axes[0] if len(axes) == 1 else None


def as_class_scores(values: np.ndarray, lead: int = 1) -> np.ndarray:
    """``values`` [*lead axes, ...] as [*lead axes, classes] when the axes after the
    ``lead`` ones hold one class axis among singletons ([N, classes, 1, 1] ->
    [N, classes]); unchanged otherwise."""
    rest = values.shape[lead:]
    if len(rest) > 1 and sum(dim != 1 for dim in rest) <= 1:
        return values.reshape(*values.shape[:lead], -1)
    return values


@dataclass(frozen=True)
class ScoredOutput:
    """The model output that predictions are read from: class scores [N, classes]
    (the prediction is the argmax; singleton axes around the classes, as in
    [N, classes, 1, 1], are dropped) or integer class labels [N]."""

    name: str
    labels: bool
    classes: int | None = None  # of a scores output, when known

    def check_labels(self, labels: np.ndarray, start: int = 0) -> None:
        """Refuse labels a scores output can never predict (outside 0..classes-1)."""
        if self.labels or self.classes is None:
            return
        bad = np.flatnonzero((labels < 0) | (labels >= self.classes))
        if bad.size:
            raise OnnxSnnError(
                f"label {int(labels[bad[0]])} of sample {start + int(bad[0])} is outside "
                f"0..{self.classes - 1}: output '{self.name}' scores {self.classes} classes "
                "(labels are class indices; choose an integer label output with --output)")


#: Per output: numpy dtype (None for a non-tensor output) and per-sample shape
#: with the batch axis first, e.g. (N, 10).
OutputTypes = Mapping[str, "tuple[np.dtype | None, tuple]"]

#: What a scored output looks like, for messages.
SCORED_KINDS = "class scores [N, classes] (or [N, classes, 1, 1], [N, 1, classes]) " \
    "or integer labels [N]"


def scored_kind(name: str, dtype: np.dtype | None, shape: tuple) -> ScoredOutput | None:
    """The output as a ``ScoredOutput``, or None when it holds neither class scores
    (classes >= 2 or unknown) nor integer labels [N]."""
    if dtype is None or len(shape) < 1:
        return None
    if dtype.kind == "f" and len(shape) >= 2:
        axis = class_axis(shape[1:])
        if axis is None:
            return None
        classes = shape[1 + axis] if isinstance(shape[1 + axis], int) else None
        return ScoredOutput(name, False, classes) if classes is None or classes >= 2 else None
    if dtype.kind in "iu" and len(shape) == 1:
        return ScoredOutput(name, True)
    return None


def describe_output(outputs: OutputTypes, name: str) -> str:
    """'name' (dtype [N, ...]) for messages."""
    dtype, shape = outputs[name]
    dims = ", ".join("N" if i == 0 else str(d) for i, d in enumerate(shape))
    return f"'{name}' ({'not a tensor' if dtype is None else f'{dtype} [{dims}]'})"


def choose_output(outputs: OutputTypes, requested: str | None = None) -> ScoredOutput:
    """The output to score: ``requested``, or the first float output with class scores
    (``scored_kind``), or else the first integer output [N]."""
    def kind(name: str) -> ScoredOutput | None:
        return scored_kind(name, *outputs[name])

    listing = ", ".join(describe_output(outputs, name) for name in outputs) or "none"
    if requested is not None:
        if requested not in outputs:
            raise OnnxSnnError(f"no output named '{requested}': outputs are {listing}")
        chosen = kind(requested)
        if chosen is None:
            raise OnnxSnnError(f"output {describe_output(outputs, requested)} cannot be "
                               f"scored: expected {SCORED_KINDS}")
        return chosen
    candidates = [c for c in map(kind, outputs) if c is not None]
    scores = [c for c in candidates if not c.labels]
    if not candidates:
        raise OnnxSnnError(f"no output holds {SCORED_KINDS}: outputs are {listing}")
    return (scores or candidates)[0]


def check_per_step(per_step: Any) -> np.ndarray:
    per_step = np.asarray(per_step)
    if per_step.ndim < 2 or per_step.shape[0] == 0 or per_step.shape[-1] == 0 \
            or per_step.dtype.kind not in "fiu":
        raise OnnxSnnError(f"per-step outputs must be numbers shaped [T, N, ..., classes] "
                           f"with T >= 1, got shape {list(per_step.shape)} ({per_step.dtype})")
    return as_class_scores(per_step, 2) if per_step.ndim > 3 else per_step


def delayed_predictions(per_step: np.ndarray, delay: int) -> np.ndarray:
    """Class predictions after each step with readout delay t0 = ``delay``: [T, N, ...].

    ``per_step``: outputs per step, [T, N, ..., classes] (class scores [T, N, classes,
    1, 1] or [T, N, 1, classes] are read as [T, N, classes]). The prediction after t
    steps is the argmax over the last axis of the sum of outputs t0+1..t when
    t > t0, and of the sum of outputs 1..t when t <= t0 (no delay: the delayed
    window would be empty). ``delay=0`` is the plain readout. Sums are taken in
    float64 from one cumulative sum C (C_t = outputs 1..t), the delayed sum being
    C_t - C_t0. See the module docstring for the sources (Rueckauer et al. 2017;
    Hwang et al. 2021).
    """
    delay = check_delay(delay)
    cumulative = np.cumsum(check_per_step(per_step), axis=0, dtype=np.float64)
    if 0 < delay < len(cumulative):
        cumulative[delay:] -= cumulative[delay - 1]
    return cumulative.argmax(axis=-1)


def ann_predictions(scored: ScoredOutput, values: np.ndarray) -> np.ndarray:
    """The ANN's class predictions from the scored output's values."""
    return values if scored.labels else as_class_scores(values).argmax(axis=-1)


@dataclass
class SpikingOutput:
    """Outputs of one run: each model output per time step, [T, N, ...]."""

    outputs: dict[str, np.ndarray]

    @property
    def per_step(self) -> np.ndarray:
        """The first output, per step: [T, N, ...]."""
        return next(iter(self.outputs.values()))

    @property
    def mean(self) -> np.ndarray:
        """The first output averaged over time: [N, ...]."""
        return self.per_step.mean(axis=0)

    def predictions(self, delay: int = 0, output: str | None = None) -> np.ndarray:
        """Class predictions after each step t, [T, N]: argmax of the sum of outputs 1..t.

        ``output`` names the output to read (default: the first). An integer
        output holds labels already: the conversion makes a label output the
        label of the scores summed over steps 1..t. ``delay`` t0 > 0 gives the
        delayed readout (``onnx_snn.runtime.predictions``) of a scores output: the sum of
        outputs t0+1..t for t > t0, and of outputs 1..t for t <= t0.
        """
        per_step = self.per_step if output is None else self.outputs[output]
        if per_step.dtype.kind in "iu":
            if check_delay(delay):
                raise OnnxSnnError("a readout delay needs class scores, not the labels of "
                                   "an integer output")
            return per_step
        return delayed_predictions(per_step, delay)
