"""The data cut into shards for workers (``onnx_snn.runtime.cluster``;
docs/semantics.md, "Distributed runs").

A shard is a run of whole batches, cut at the same boundaries as one process
cuts the data, so per-batch results are the same wherever they are computed.
Each worker reads its shard's rows itself: memory-mapped from an uncompressed
.npz once its CRC is checked (a streaming pass, once per file and worker; a
compressed one is streamed up to the shard), sliced from arrays or a
dict of arrays (which the cluster puts in its object store once). Other data
(readers, iterables) cannot be cut without reading it through the driver, so
it is refused.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.constant_inputs import npz_constants
from onnx_snn.io.data import LABELS, DataSource, InputSpec
from onnx_snn.io.npz import Member, npz_batches, npz_keys_for, npz_members, npz_rows
from onnx_snn.io.reading import check_member, data_offset, member_info, open_npz, shown


@dataclass(frozen=True)
class Shard:
    """Rows ``start``..``stop``−1 of the data: batches ``first_batch`` onwards."""

    first_batch: int
    start: int
    stop: int

    def describe(self, data: Any, message: str = "") -> str:
        """The shard's rows, after the data file's name unless ``message`` starts with it."""
        where = f"{shown(data)}: " if isinstance(data, (str, Path)) else ""
        if where and message.startswith(where):
            where = ""
        return f"{where}rows {self.start}-{self.stop - 1}"


def sample_count(data: Any, specs: list[InputSpec]) -> int:
    """How many samples ``data`` holds; refuses data a worker cannot read by rows."""
    data = data.data if isinstance(data, DataSource) else data
    if isinstance(data, (str, Path)):  # headers checked against the model
        path = Path(data)
        return npz_rows(path, npz_keys_for(path, [spec.name for spec in specs]), specs)
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
    members = npz_members(path, keys, specs, batch_size)  # headers checked first
    constants = npz_constants(path, keys, specs)
    by_rows = {name: key for name, key in keys.items() if name not in constants}
    if all(members[name].info.compress_type == zipfile.ZIP_STORED for name in by_rows):
        return {**{name: _memory_map(path, members[name])[rows] for name in by_rows},
                **constants}, None
    skipped = range(shard.first_batch, shard.first_batch + -(-(shard.stop - shard.start)
                                                               // batch_size))
    return [{**batch, **constants} for index, batch
            in enumerate(npz_batches(path, by_rows, batch_size, specs))
            if index in skipped], None


def _memory_map(path: Path, member: Member) -> np.ndarray:
    """A stored (uncompressed) array mapped from the file, once its CRC is checked."""
    status = path.stat()
    _check_crc(str(path), member.info.filename,
               (status.st_ino, status.st_size, status.st_mtime_ns))
    shape, fortran, dtype = member.header
    return np.memmap(path, dtype=dtype, mode="r", offset=data_offset(path, member.info)
                     + member.offset, shape=shape, order="F" if fortran else "C")


@functools.lru_cache(maxsize=64)
def _check_crc(path: str, name: str, identity: tuple[int, int, int]) -> None:
    """Read a member through once to check its CRC (once per version of the file:
    ``identity`` is its inode, size and modification time)."""
    with open_npz(Path(path)) as archive:
        info = member_info(Path(path), archive, name)
    check_member(Path(path), info)
