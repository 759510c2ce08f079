"""Calibration modes (docs/semantics.md, "Calibration statistics"), parsed once into a
``CalibrationMode``, and the percentile arithmetic that reproduces numpy's exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.validation import is_number

#: A mode as users write it: "Max", "P%" or a fraction of the max.
Mode = Union[str, float]


@dataclass(frozen=True)
class CalibrationMode:
    """A parsed mode: ``kind`` "max", "percentile" (``value`` P in [0, 100]) or
    "fraction" (``value`` f in (0, 1]); ``given`` is what the user wrote."""

    kind: str
    value: float | None
    given: Mode

    @classmethod
    def parse(cls, mode: Mode) -> CalibrationMode:
        """The mode, or an ``OnnxSnnError`` naming what is wrong with it."""
        if isinstance(mode, CalibrationMode):
            return mode
        problem = (f"calibration mode {mode!r} is not valid: use 'Max', a percentile such as "
                   "'99.9%' (0-100), or a number in (0, 1]")
        if isinstance(mode, str):
            text = mode.strip()
            if text.lower() == "max":
                return cls("max", None, mode)
            if text.endswith("%"):
                try:
                    percent = float(text[:-1])
                except ValueError as error:
                    raise OnnxSnnError(problem) from error
                if 0.0 <= percent <= 100.0:
                    return cls("percentile", percent, mode)
            raise OnnxSnnError(problem)
        if is_number(mode) and 0.0 < float(mode) <= 1.0:
            return cls("fraction", float(mode), mode)
        raise OnnxSnnError(problem)


def check_momentum(momentum: float) -> float:
    """The momentum as a float in [0, 1]; errors otherwise."""
    if not is_number(momentum) or not 0.0 <= float(momentum) <= 1.0:
        raise OnnxSnnError(f"momentum {momentum!r} is not valid: use a number in [0, 1]")
    return float(momentum)


def numpy_linear_percentile(n: int, percent: float, sorted_at) -> np.floating:
    """``np.percentile(a, percent)`` (linear method) given ``sorted_at(j)``, the j-th
    smallest element of ``a`` (size ``n``). Follows numpy's arithmetic step by step,
    so the result is identical, while only two elements need to be known."""
    virtual = (n - 1) * np.true_divide(percent, 100)
    if virtual >= n - 1:
        return sorted_at(n - 1)
    below = int(np.floor(virtual))
    gamma = float(virtual - below)
    low, high = sorted_at(below), sorted_at(below + 1)
    diff = high - low
    if gamma >= 0.5:
        return high - diff * (1 - gamma)
    return low + diff * gamma
