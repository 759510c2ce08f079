"""Reading .npz archives row block by row block, never whole.

Each array's header is checked against the size the archive holds for it, so a
header that lies (or a zip bomb) is refused before anything large is read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError


def npz_keys_for(path: Path, inputs: list[str], labels: str | None = None) -> dict[str, str]:
    """Map each model input (and ``labels`` when given) to its .npz array: arrays named
    after the inputs, or ``x`` for a single-input model."""
    files = npz_files(path)
    if all(name in files for name in inputs):
        keys = {name: name for name in inputs}
    elif len(inputs) == 1 and "x" in files:
        keys = {inputs[0]: "x"}
    else:
        names = [repr(name) for name in inputs]
        if len(inputs) == 1 and inputs[0] != "x":
            names.insert(0, "'x'")
        wanted = " or ".join(names) if len(inputs) == 1 else ", ".join(names)
        raise OnnxSnnError(f"{path}: expected an array {wanted}; found "
                           f"{', '.join(sorted(files)) or 'no arrays'}")
    if labels is not None:
        if labels not in files:
            raise OnnxSnnError(f"{path}: no array named '{labels}' (integer labels, one per "
                               f"sample); found {', '.join(sorted(files))}")
        keys[labels] = labels
    return keys


def npz_files(path: Path) -> set[str]:
    """The array names of an .npz archive; a clear error for anything else."""
    if not path.is_file():
        raise OnnxSnnError(f"{path}: no such data file")
    try:
        with zipfile.ZipFile(path) as archive:
            return {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
    except zipfile.BadZipFile:
        with open(path, "rb") as handle:
            is_npy = handle.read(6) == b"\x93NUMPY"
        hint = (" (a .npy file holds one array; save the arrays with numpy.savez(path, x=..., "
                "y=...))" if is_npy else "")
        raise OnnxSnnError(f"{path}: not an .npz archive{hint}") from None
    except OSError as error:
        raise OnnxSnnError(f"{path}: cannot read as .npz ({error.strerror or error})") from None


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of one array, checked against the archive's size."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        try:
            header = read_npy_header(member)
        except (ValueError, OSError, EOFError) as error:
            raise OnnxSnnError(f"{path}: array '{key}' has a broken header ({error})") from None
        offset = member.tell()
        stored = archive.getinfo(f"{key}.npy").file_size
    shape, _, dtype = header
    if dtype.hasobject or not shape:
        raise OnnxSnnError(f"{path}: array '{key}' must be a numeric array with samples "
                           "along axis 0")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset + claimed != stored:
        raise OnnxSnnError(f"{path}: array '{key}' claims shape {list(shape)} ({claimed:,} "
                           f"bytes), but the archive holds {max(stored - offset, 0):,} bytes "
                           "for it")
    return header


def read_npy_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f".npy format version {version} is not supported")


def npz_batches(path: Path, keys: dict[str, str], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Stream rows of the arrays ``keys`` from an .npz, one batch at a time.

    C-ordered arrays are read row block by row block; a Fortran-ordered array
    cannot be, so it is read in whole (its size is checked against the archive).
    """
    headers = {name: npz_header(path, key) for name, key in keys.items()}
    rows = {shape[0] for shape, _, _ in headers.values()}
    if len(rows) > 1:
        raise OnnxSnnError(f"{path}: arrays {', '.join(keys.values())} have different "
                           f"numbers of samples {sorted(rows)}")
    total = rows.pop()
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.open(f"{key}.npy") for name, key in keys.items()}
        try:
            readers = {name: _npz_row_blocks(path, keys[name], members[name], headers[name],
                                             batch_size) for name in members}
            for _ in range(0, total, batch_size):
                yield {name: next(reader) for name, reader in readers.items()}
        except zipfile.BadZipFile as error:
            raise OnnxSnnError(f"{path}: the archive is corrupt ({error})") from None
        finally:
            for member in members.values():
                member.close()


def _npz_row_blocks(path: Path, key: str, member: Any, header: tuple,
                    batch_size: int) -> Iterator[np.ndarray]:
    shape, fortran, dtype = header
    total = shape[0]
    read_npy_header(member)
    if fortran:
        whole = np.frombuffer(_read_exactly(path, key, member, int(np.prod(shape)) *
                                            dtype.itemsize), dtype=dtype)
        whole = whole.reshape(shape[::-1]).transpose()
        for start in range(0, total, batch_size):
            yield whole[start:start + batch_size]
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for start in range(0, total, batch_size):
        count = min(batch_size, total - start)
        buffer = _read_exactly(path, key, member, count * row_bytes)
        yield np.frombuffer(buffer, dtype=dtype).reshape((count, *shape[1:]))


def _read_exactly(path: Path, key: str, member: Any, size: int) -> bytes:
    buffer = member.read(size)
    if len(buffer) != size:
        raise OnnxSnnError(f"{path}: array '{key}' ends early: {len(buffer):,} of {size:,} "
                           "bytes could be read")
    return buffer
