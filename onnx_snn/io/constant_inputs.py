"""Constant inputs: model inputs without a batch axis (a rank-0 setting such as a
pitch net's ``fmin``; ``onnx_snn.io.data.InputSpec.batched`` is False).

The data gives such an input once, with the input's exact shape (an .npz member or
a dict entry of that shape, a 0-d array for a scalar); it is fed as it is with
every batch, in calibration, evaluation and at every step of a spiking run. A
column that repeats one value for every sample ([rows, *shape], all rows equal) is
read as that value; differing values are refused, since the model takes one value
per run.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.npz import read_npy_header

#: An ``onnx_snn.io.data.InputSpec`` (not imported: that module imports this one).
InputSpec = Any


def constant_value(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """The value of constant input ``spec`` in one batch: ``array`` of the input's
    exact shape, or a column [rows, *shape] of one value repeated."""
    expected = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
    if array.ndim == len(spec.shape) + 1 and len(array) and (array == array[:1]).all():
        array = np.asarray(array[0])  # a 0-d array, not a numpy scalar
    elif array.ndim == len(spec.shape) + 1:
        raise OnnxSnnError(f"{where}: input '{spec.name}' has no batch axis (shape "
                           f"{expected}): it takes one value for the whole batch, but the "
                           f"data gives {len(array)} different ones; give it once, shape "
                           f"{expected}")
    if array.ndim != len(spec.shape) or any(want is not None and got != want
                                            for got, want in zip(array.shape, spec.shape)):
        raise OnnxSnnError(f"{where}: input '{spec.name}' has shape {list(array.shape)}; "
                           f"expected {expected} (an input without a batch axis: one value "
                           "for every sample)")
    return array


def dict_constants(source: Mapping, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """The entries of a dict that give a constant input once (the input's rank)."""
    return {spec.name: np.asarray(source[spec.name]) for spec in specs
            if not spec.batched and spec.name in source
            and np.ndim(source[spec.name]) == len(spec.shape)}


def npz_constants(path: Path, keys: dict[str, str],
                  specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """The .npz members (``keys``: input name -> member) that give a constant input
    once, read whole; a member with a leading row axis is left to the row reader."""
    found = {}
    with zipfile.ZipFile(path) as archive:
        for spec in (s for s in specs if not s.batched and s.name in keys):
            with archive.open(f"{keys[spec.name]}.npy") as member:
                shape, fortran, dtype = read_npy_header(member)
                if len(shape) != len(spec.shape) or dtype.hasobject:
                    continue  # a column [rows, ...], or refused by the row reader
                size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                data = member.read(size)
                if len(data) != size:
                    raise OnnxSnnError(f"{path}: array '{keys[spec.name]}' ends early: "
                                       f"{len(data):,} of {size:,} bytes could be read")
            found[spec.name] = np.frombuffer(data, dtype).reshape(
                shape, order="F" if fortran else "C")
    return found
