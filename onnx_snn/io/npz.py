"""Reading .npz archives row block by row block, never whole.

Each array's .npy header is read first (its length bounded) and checked against
the size the archive holds for it and against the model input it feeds (rank,
the size of a sample, numbers), so a header that lies, a zip bomb or a row of
the wrong size is refused before any data is read. Members are read through
``onnx_snn.io.reading`` (sizes and CRCs checked). A Fortran-ordered array is
read a window of rows at a time, one pass over the member per window.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError, first_line
from onnx_snn.io.reading import MemberStream, check_member, member_info, open_npz, shown

NpyHeader = tuple[tuple[int, ...], bool, np.dtype]
#: An ``onnx_snn.io.data.InputSpec`` (not imported: that module imports this one).
InputSpec = Any
#: numpy.load's own limit on the length of a .npy header.
MAX_HEADER_BYTES = 10_000
#: The most bytes one batch of one array may take when read.
MAX_BATCH_BYTES = 1 << 31
#: The rows of a Fortran-ordered array read in one pass over it (or one batch, if larger).
FORTRAN_WINDOW_BYTES = 64 << 20


@dataclass(frozen=True)
class Member:
    """One array of an archive: its directory entry, header and where its data starts."""

    info: zipfile.ZipInfo
    header: NpyHeader
    offset: int  # the length of the .npy header, before the data

    @property
    def row_bytes(self) -> int:
        shape, _, dtype = self.header
        return int(np.prod(shape[1:], dtype=object)) * dtype.itemsize


def shape_text(shape: tuple[int | None, ...]) -> str:
    """A model input's shape for messages: [N, 8], '?' for a dynamic size."""
    return "[" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + "]"


def npz_keys_for(path: Path, inputs: list[str], labels: str | None = None) -> dict[str, str]:
    """Map each model input (and ``labels`` when given) to its .npz array: arrays named
    after the inputs, or ``x`` for a single-input model."""
    files = npz_files(path)
    found = ", ".join(map(repr, sorted(files))) or "no arrays"
    if all(name in files for name in inputs):
        keys = {name: name for name in inputs}
    elif len(inputs) == 1 and "x" in files:
        keys = {inputs[0]: "x"}
    else:
        names = [repr(name) for name in inputs]
        if len(inputs) == 1 and inputs[0] != "x":
            names.insert(0, "'x'")
        wanted = " or ".join(names) if len(inputs) == 1 else ", ".join(names)
        raise OnnxSnnError(f"{shown(path)}: expected an array {wanted}; found {found}")
    if labels is not None:
        if labels not in files:
            raise OnnxSnnError(f"{shown(path)}: no array named {labels!r} (integer labels, "
                               f"one per sample); found {found}")
        keys[labels] = labels
    return keys


def npz_files(path: Path) -> set[str]:
    """The array names of an .npz archive; a clear error for anything else."""
    with open_npz(path) as archive:
        return {n[:-4] for n in archive.namelist() if n.endswith(".npy")}


def read_npy_header(member: Any) -> NpyHeader:
    """Shape, Fortran order and dtype from the .npy header at ``member``'s position; a
    header longer than numpy reads is refused before it is read (``ValueError``)."""
    magic = member.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("no .npy header")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    length_format = "<H" if version == (1, 0) else "<I"
    length_bytes = member.read(struct.calcsize(length_format))
    if len(length_bytes) < struct.calcsize(length_format):
        raise ValueError("the header ends early")
    (length,) = struct.unpack(length_format, length_bytes)
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"the header claims {length:,} bytes; at most {MAX_HEADER_BYTES:,}")
    text = member.read(length)
    if len(text) < length:
        raise ValueError("the header ends early")
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    try:
        return reader(io.BytesIO(length_bytes + text))
    except (SyntaxError, RecursionError, TypeError) as error:
        raise ValueError(first_line(error)) from error


def _member(path: Path, archive: zipfile.ZipFile, key: str) -> Member:
    """Array ``key``'s header, checked against the size the archive holds for it."""
    info = member_info(path, archive, f"{key}.npy")
    with MemberStream(path, info) as stream:
        try:
            header = read_npy_header(stream)
        except ValueError as error:
            raise OnnxSnnError(f"{shown(path)}: array {key!r} has a broken header "
                               f"({first_line(error)})") from error
        offset = stream.position
    shape, _, dtype = header
    if dtype.hasobject or min(shape, default=0) < 0:
        raise OnnxSnnError(f"{shown(path)}: array {key!r} must be a numeric array with "
                           f"samples along axis 0 (got shape {list(shape)}, {dtype})")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset + claimed != info.file_size:
        raise OnnxSnnError(f"{shown(path)}: array {key!r} claims shape {list(shape)} "
                           f"({claimed:,} bytes), but the archive holds "
                           f"{max(info.file_size - offset, 0):,} bytes for it")
    return Member(info, header, offset)


def npz_header(path: Path, key: str) -> NpyHeader:
    """Shape, Fortran order and dtype of one array of samples (along axis 0), checked
    against the archive's size."""
    with open_npz(path) as archive:
        header = _member(path, archive, key).header
    if not header[0]:
        raise OnnxSnnError(f"{shown(path)}: array {key!r} must be a numeric array with "
                           "samples along axis 0 (got a single value)")
    return header


def npz_members(path: Path, keys: Mapping[str, str], specs: list[InputSpec],
                batch_size: int | None = None) -> dict[str, Member]:
    """The arrays ``keys`` (input name -> array; a name no spec has holds labels), each
    header checked against the archive, the model input it feeds and (with
    ``batch_size``) the size of a batch, before any data is read."""
    by_name = {spec.name: spec for spec in specs}
    with open_npz(path) as archive:
        members = {name: _member(path, archive, key) for name, key in keys.items()}
    for name, member in members.items():
        _check_for(path, keys[name], member.header, by_name.get(name))
        if given_once(member.header, by_name.get(name)):
            check_member(path, member.info)  # read whole by onnx_snn.io.constant_inputs
            continue
        rows = min(batch_size or 0, member.header[0][0])
        if rows * member.row_bytes > MAX_BATCH_BYTES:
            raise OnnxSnnError(f"{shown(path)}: a batch of {rows} rows of array "
                               f"{keys[name]!r} {list(member.header[0])} takes "
                               f"{rows * member.row_bytes:,} bytes; expected at most "
                               f"{MAX_BATCH_BYTES:,}: use a smaller batch size")
    return members


def given_once(header: NpyHeader, spec: InputSpec | None) -> bool:
    """Whether an array gives an input without a batch axis once (its exact rank)."""
    return spec is not None and not spec.batched and len(header[0]) == len(spec.shape)


def npz_rows(path: Path, keys: Mapping[str, str], specs: list[InputSpec]) -> int:
    """The samples of the arrays ``keys`` (``npz_members`` checks them)."""
    return _rows(path, keys, npz_members(path, keys, specs), specs)


def _rows(path: Path, keys: Mapping[str, str], members: dict[str, Member],
          specs: list[InputSpec]) -> int:
    """The samples of the arrays read by rows, which must agree."""
    by_name = {spec.name: spec for spec in specs}
    rows = {member.header[0][0] for name, member in members.items()
            if not given_once(member.header, by_name.get(name))}
    if len(rows) > 1:
        raise OnnxSnnError(f"{shown(path)}: arrays {', '.join(map(repr, keys.values()))} "
                           f"have different numbers of samples {sorted(rows)}")
    return rows.pop() if rows else 0


def _check_for(path: Path, key: str, header: NpyHeader, spec: InputSpec | None) -> None:
    """Refuse an array whose header does not fit the model input ``spec`` (None: labels)."""
    shape, _, dtype = header
    what = f"{shown(path)}: array {key!r}"
    if spec is None:
        if len(shape) not in (1, 2) or dtype.kind not in "fiub":
            raise OnnxSnnError(f"{what} holds labels: expected integers [N] or one-hot rows "
                               f"[N, classes]; got shape {list(shape)} ({dtype})")
        return
    what += "" if spec.name == key else f" (input {spec.name!r})"
    if dtype.kind not in "fiub":
        raise OnnxSnnError(f"{what} has dtype {dtype}; expected numbers ({spec.dtype})")
    if given_once(header, spec):
        return  # a single value: onnx_snn.io.constant_inputs checks its shape
    if not shape:
        raise OnnxSnnError(f"{what} must have samples along axis 0 (got a single value)")
    expected = spec.shape if spec.batched else (None, *spec.shape)
    if len(shape) != len(expected) or any(want is not None and got != want
                                          for got, want in zip(shape[1:], expected[1:])):
        raise OnnxSnnError(f"{what} has shape {list(shape)}; expected {shape_text(expected)}")


def npz_batches(path: Path, keys: Mapping[str, str], batch_size: int,
                specs: list[InputSpec]) -> Iterator[dict[str, np.ndarray]]:
    """Stream rows of the arrays ``keys`` (as ``npz_members`` takes them) from an .npz,
    one batch at a time, after every header is checked. An array that gives a constant
    input once is left to ``onnx_snn.io.constant_inputs``."""
    members = npz_members(path, keys, specs, batch_size)
    total = _rows(path, keys, members, specs)
    by_name = {spec.name: spec for spec in specs}
    readers = {name: (_fortran_blocks if member.header[1] else _c_blocks)(
        path, member, batch_size) for name, member in members.items()
        if not given_once(member.header, by_name.get(name))}
    try:
        for _ in range(0, total, batch_size):
            yield {name: next(reader) for name, reader in readers.items()}
    except OSError as error:
        raise OnnxSnnError(f"{shown(path)}: cannot read the data "
                           f"({error.strerror or error})") from error
    finally:
        for reader in readers.values():
            reader.close()


def _c_blocks(path: Path, member: Member, batch_size: int) -> Iterator[np.ndarray]:
    """Row blocks of a C-ordered array, read in order."""
    shape, _, dtype = member.header
    with MemberStream(path, member.info) as stream:
        stream.skip(member.offset)
        for start in range(0, shape[0], batch_size):
            count = min(batch_size, shape[0] - start)
            data = stream.read(count * member.row_bytes)
            yield np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]))


def _fortran_blocks(path: Path, member: Member, batch_size: int) -> Iterator[np.ndarray]:
    """Row blocks of a Fortran-ordered array, whose rows are spread over the member:
    each pass over it reads the next window of rows, column by column."""
    shape, _, dtype = member.header
    rows, columns = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    per_pass = max(1, FORTRAN_WINDOW_BYTES // max(batch_size * member.row_bytes, 1)) \
        * batch_size
    for first in range(0, rows, per_pass):
        count = min(per_pass, rows - first)
        window = np.empty((columns, count), dtype)
        with MemberStream(path, member.info) as stream:
            for column in range(columns):
                stream.skip(member.offset + (column * rows + first) * dtype.itemsize
                            - stream.position)
                window[column] = np.frombuffer(stream.read(count * dtype.itemsize), dtype)
        block = window.reshape((*shape[:0:-1], count)).transpose()
        for start in range(0, count, batch_size):
            yield np.ascontiguousarray(block[start:start + batch_size])
