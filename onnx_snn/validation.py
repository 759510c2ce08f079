"""Checks of user-given settings, each raising ``OnnxSnnError`` with one clear line.

Every public entry point validates its arguments with these, so misuse of the
Python API gives the same kind of message as the command line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError

#: The smallest and largest positive normal float32.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))


def check_positive_int(value: Any, what: str, expected: str = "a positive integer") -> int:
    """``value`` as an int >= 1; otherwise "<what> must be <expected>, got <value>"."""
    if not is_integer(value) or value <= 0:
        raise OnnxSnnError(f"{what} must be {expected}, got {value!r}")
    return int(value)


def check_non_negative_int(value: Any, what: str) -> int:
    """``value`` as an int >= 0."""
    if not is_integer(value) or value < 0:
        raise OnnxSnnError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OnnxSnnError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def check_float32_normal(value: Any, what: str) -> float:
    """A positive number that float32 holds as a normal value (no 0, denormal or inf)."""
    if not is_number(value) or not math.isfinite(float(value)) \
            or not FLOAT32_TINY <= float(value) <= FLOAT32_MAX:
        raise OnnxSnnError(f"{what} must be a positive float32 number in "
                           f"[{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}], got {value!r}")
    return float(value)


def check_finite(value: Any, what: str) -> float:
    if not is_number(value) or not math.isfinite(float(value)) \
            or abs(float(value)) > FLOAT32_MAX:
        raise OnnxSnnError(f"{what} must be a finite float32 number, got {value!r}")
    return float(value)
