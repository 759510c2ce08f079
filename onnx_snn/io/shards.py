"""The data cut into shards for workers (``onnx_snn.runtime.cluster``, SPEC §12).

A shard is a run of whole batches, cut at the same boundaries as one process
cuts the data, so per-batch results are the same wherever they are computed.
Each worker reads its shard's rows itself: memory-mapped from an uncompressed
.npz (a compressed one is streamed up to the shard), sliced from arrays or a
dict of arrays (which the cluster puts in its object store once). Other data
(readers, iterables) cannot be cut without reading it through the driver, so
it is refused.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import LABELS, DataSource, InputSpec
from onnx_snn.io.npz import npz_batches, npz_header, npz_keys_for, read_npy_header


@dataclass(frozen=True)
class Shard:
    """Rows ``start``..``stop``−1 of the data: batches ``first_batch`` onwards."""

    first_batch: int
    start: int
    stop: int

    def describe(self, data: Any) -> str:
        where = f"{data}: " if isinstance(data, (str, Path)) else ""
        return f"{where}rows {self.start}-{self.stop - 1}"


def sample_count(data: Any, specs: list[InputSpec]) -> int:
    """How many samples ``data`` holds; refuses data a worker cannot read by rows."""
    data = data.data if isinstance(data, DataSource) else data
    batched = [spec.name for spec in specs if spec.batched] or [spec.name for spec in specs]
    if isinstance(data, (str, Path)):  # constant inputs (no batch axis) hold no rows
        keys = npz_keys_for(Path(data), batched)
        return npz_header(Path(data), next(iter(keys.values())))[0][0]
    if isinstance(data, Mapping):
        return len(next(v for v in data.values() if np.ndim(v)))
    if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        return len(np.asarray(data))
    raise OnnxSnnError(f"workers read their rows themselves: give the data as an .npz path, "
                       f"an array or a dict of arrays, not {type(data).__name__}")


def plan_shards(samples: int, batch_size: int, batches_per_shard: int) -> list[Shard]:
    """Consecutive shards of ``batches_per_shard`` batches of ``batch_size`` rows."""
    rows = batch_size * batches_per_shard
    return [Shard(start // batch_size, start, min(start + rows, samples))
            for start in range(0, samples, rows)]


def shard_source(data: Any, shard: Shard, specs: list[InputSpec], batch_size: int,
                 labelled: bool, labels: Any = None) -> tuple[Any, Any]:
    """The shard's rows as data ``onnx_snn.io.data`` reads, and its separate labels."""
    rows = slice(shard.start, shard.stop)
    labels = None if labels is None else np.asarray(labels)[rows]
    if isinstance(data, Mapping):
        return {name: values[rows] for name, values in data.items()}, labels
    if not isinstance(data, (str, Path)):
        return np.asarray(data)[rows], labels
    path = Path(data)
    keys = npz_keys_for(path, [spec.name for spec in specs], LABELS if labelled else None)
    mapped = {name: _memory_map(path, key) for name, key in keys.items()}
    if all(array is not None for array in mapped.values()):
        return {name: array[rows] for name, array in mapped.items()}, None
    skipped = range(shard.first_batch, shard.first_batch + -(-(shard.stop - shard.start)
                                                               // batch_size))
    return [batch for index, batch in enumerate(npz_batches(path, keys, batch_size))
            if index in skipped], None


def _memory_map(path: Path, key: str) -> np.ndarray | None:
    """Array ``key`` of the .npz mapped from the file, or None when it is compressed."""
    shape, fortran, dtype = npz_header(path, key)  # checks the size the archive holds
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        local = file.read(30)  # the zip's local file header
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        file.seek(info.header_offset + 30 + name_length + extra_length)
        read_npy_header(file)
        offset = file.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")
