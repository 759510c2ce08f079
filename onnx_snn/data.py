"""Data readers: turn what the user has into validated batches for a model.

Accepted forms (``batches``):

- a numpy array (or anything ``np.asarray`` takes, e.g. a torch tensor), cut
  into batches of ``batch_size`` along axis 0;
- a dict ``{input name: array}``, cut the same way;
- a path to an ``.npz`` file holding ``x`` (single-input models) or one array
  per input name; rows are streamed from the file, never loaded whole;
- any other iterable whose items are arrays, ``{input name: array}`` dicts or
  ``(input, target, ...)`` tuples, e.g. a torch DataLoader; items are used as
  the batches they already are.

Every batch is checked against the model's inputs (names, shape, dtype kind,
finite values) and cast to the input's dtype.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnx_snn.errors import OnnxSnnError

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype, and shape (None for a dynamic dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        return self.shape[1:]


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's data inputs (graph inputs that are not initializers)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None
                     for d in tensor_type.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        specs.append(InputSpec(value.name, dtype, dims))
    return specs


class BatchStream:
    """Validated batches; iterable more than once when the source allows it."""

    def __init__(self, source: Any, specs: list[InputSpec], batch_size: int) -> None:
        self.specs = specs
        self.batch_size = check_batch_size(batch_size)
        self._source = source
        self.num_batches = _batch_count(source, specs, self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        count = 0
        for index, raw in enumerate(_raw_batches(self._source, self.specs, self.batch_size)):
            count += 1
            yield validate_batch(raw, self.specs, where=f"batch {index}")
        if count == 0:
            source = f"{self._source}: " if isinstance(self._source, (str, Path)) else ""
            raise OnnxSnnError(f"{source}the data is empty: no batch to read")


def check_batch_size(batch_size: Any) -> int:
    """The batch size as a positive int; ``OnnxSnnError`` otherwise."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise OnnxSnnError(f"batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def batches(data: Any, specs: list[InputSpec], batch_size: int = 100) -> BatchStream:
    """Validated batches of ``data`` for a model with inputs ``specs``."""
    return BatchStream(data, specs, batch_size)


def validate_batch(raw: Any, specs: list[InputSpec], where: str) -> Batch:
    """Check a batch against the model inputs and cast it to their dtypes."""
    feed = _as_feed(raw, specs, where)
    sizes = set()
    for spec in specs:
        array = feed[spec.name]
        if array.dtype.kind not in "fiub":
            raise OnnxSnnError(f"{where}: input '{spec.name}' has dtype {array.dtype}; "
                               f"expected numbers ({spec.dtype})")
        if array.ndim != len(spec.shape):
            raise OnnxSnnError(f"{where}: input '{spec.name}' has shape {list(array.shape)}; "
                               f"expected {_shape_text(spec.shape)}")
        for got, want in zip(array.shape[1:], spec.sample_shape):
            if want is not None and got != want:
                raise OnnxSnnError(f"{where}: input '{spec.name}' has shape "
                                   f"{list(array.shape)}; expected {_shape_text(spec.shape)}")
        if array.shape[0] == 0:
            raise OnnxSnnError(f"{where}: input '{spec.name}' has no samples")
        with np.errstate(over="ignore"):  # overflow shows up as Inf, reported below
            array = array.astype(spec.dtype, copy=False)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise OnnxSnnError(f"{where}: input '{spec.name}' contains NaN or Inf")
        feed[spec.name] = array
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise OnnxSnnError(f"{where}: inputs have different batch sizes {sorted(sizes)}")
    return feed


def load_npz_arrays(path: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """Load whole arrays ``names`` from an ``.npz`` file (for labels, small data)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [n for n in names if n not in archive.files]
            if missing:
                raise OnnxSnnError(f"{path}: no array named {', '.join(map(repr, missing))} "
                                   f"(has {', '.join(archive.files) or 'none'})")
            return {n: archive[n] for n in names}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise OnnxSnnError(f"{path}: cannot read as .npz ({error})") from None


def npz_keys_for(path: Path, specs: list[InputSpec]) -> dict[str, str]:
    """Map each model input to the .npz array that feeds it."""
    try:
        with zipfile.ZipFile(path) as archive:
            files = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
    except (OSError, zipfile.BadZipFile) as error:
        raise OnnxSnnError(f"{path}: cannot read as .npz ({error})") from None
    if all(spec.name in files for spec in specs):
        return {spec.name: spec.name for spec in specs}
    if len(specs) == 1 and "x" in files:
        return {specs[0].name: "x"}
    names = [repr(s.name) for s in specs]
    if len(specs) == 1 and specs[0].name != "x":
        names.insert(0, "'x'")
    wanted = " or ".join(names) if len(specs) == 1 else ", ".join(names)
    raise OnnxSnnError(f"{path}: expected an array {wanted}; found "
                       f"{', '.join(sorted(files)) or 'no arrays'}")


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + "]"


def _as_feed(raw: Any, specs: list[InputSpec], where: str) -> Batch:
    if isinstance(raw, Mapping):
        missing = [s.name for s in specs if s.name not in raw]
        if missing:
            raise OnnxSnnError(f"{where}: missing input {', '.join(map(repr, missing))} "
                               f"(got {', '.join(map(repr, raw)) or 'nothing'})")
        return {s.name: np.asarray(raw[s.name]) for s in specs}
    if isinstance(raw, (tuple, list)) and raw and not _is_number_array(raw):
        return _as_feed(raw[0], specs, where)
    if len(specs) != 1:
        raise OnnxSnnError(f"{where}: the model has {len(specs)} inputs "
                           f"({', '.join(s.name for s in specs)}); give a dict per batch")
    return {specs[0].name: np.asarray(raw)}


def _is_number_array(raw: Any) -> bool:
    """A plain nested list of numbers rather than an (input, target) tuple."""
    return isinstance(raw, list) and all(isinstance(v, (int, float, list)) for v in raw)


def _is_array_like(data: Any) -> bool:
    return isinstance(data, np.ndarray) or hasattr(data, "__array__")


def _batch_count(source: Any, specs: list[InputSpec], batch_size: int) -> int | None:
    """How many batches ``source`` will give, or None when it does not say."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise OnnxSnnError(f"{path}: no such data file")
        keys = npz_keys_for(path, specs)
        rows = _npz_rows(path, next(iter(keys.values())))
    elif _is_array_like(source):
        rows = int(np.shape(source)[0]) if np.ndim(source) else 0
    elif isinstance(source, Mapping):
        rows = max((int(np.shape(v)[0]) for v in source.values() if np.ndim(v)), default=0)
    elif isinstance(source, Iterable):
        return len(source) if hasattr(source, "__len__") else None
    else:
        raise OnnxSnnError(f"unsupported data of type {type(source).__name__}: give an array, "
                           "a dict of arrays, an .npz path or an iterable of batches")
    return -(-rows // batch_size)


def _raw_batches(source: Any, specs: list[InputSpec], batch_size: int) -> Iterator[Any]:
    if isinstance(source, (str, Path)):
        yield from _npz_batches(Path(source), npz_keys_for(Path(source), specs), batch_size)
    elif _is_array_like(source):
        array = np.asarray(source)
        if array.ndim == 0:
            raise OnnxSnnError("the data is a scalar; expected samples along axis 0")
        for start in range(0, array.shape[0], batch_size):
            yield array[start:start + batch_size]
    elif isinstance(source, Mapping):
        arrays = {k: np.asarray(v) for k, v in source.items()}
        rows = max((a.shape[0] for a in arrays.values() if a.ndim), default=0)
        for start in range(0, rows, batch_size):
            yield {k: a[start:start + batch_size] for k, a in arrays.items()}
    else:
        yield from source


def _npz_rows(path: Path, key: str) -> int:
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        shape, _, _ = _read_npy_header(member)
    if not shape:
        raise OnnxSnnError(f"{path}: array '{key}' is a scalar; expected samples along axis 0")
    return shape[0]


def _read_npy_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def _npz_batches(path: Path, keys: dict[str, str], batch_size: int) -> Iterator[Batch]:
    """Stream rows of the arrays ``keys`` from an .npz, one batch at a time.

    C-ordered arrays are read row block by row block; a Fortran-ordered array
    cannot be, so it is loaded whole.
    """
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.open(f"{key}.npy") for name, key in keys.items()}
        try:
            headers = {name: _read_npy_header(m) for name, m in members.items()}
            for name, (shape, _, dtype) in headers.items():
                if dtype.hasobject or not shape:
                    raise OnnxSnnError(f"{path}: array '{keys[name]}' must be a numeric array "
                                       "with samples along axis 0")
            rows = {shape[0] for shape, _, _ in headers.values()}
            if len(rows) > 1:
                raise OnnxSnnError(f"{path}: arrays {', '.join(keys.values())} have different "
                                   f"numbers of samples {sorted(rows)}")
            total = rows.pop()
            readers = {name: _npz_row_blocks(path, keys[name], members[name], headers[name],
                                             total, batch_size) for name in members}
            for _ in range(0, total, batch_size):
                yield {name: next(reader) for name, reader in readers.items()}
        finally:
            for member in members.values():
                member.close()


def _npz_row_blocks(path: Path, key: str, member: Any, header: tuple, total: int,
                    batch_size: int) -> Iterator[np.ndarray]:
    shape, fortran, dtype = header
    if fortran:
        whole = load_npz_arrays(path, [key])[key]
        for start in range(0, total, batch_size):
            yield whole[start:start + batch_size]
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for start in range(0, total, batch_size):
        count = min(batch_size, total - start)
        buffer = member.read(count * row_bytes)
        yield np.frombuffer(buffer, dtype=dtype).reshape((count, *shape[1:]))
