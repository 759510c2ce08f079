"""Data readers: one protocol for calibration, evaluation and reports.

Accepted forms (``batches``, and ``labelled_batches`` when labels are needed):

- a numpy array (or anything ``np.asarray`` takes, e.g. a torch tensor), cut
  into batches of ``batch_size`` along axis 0; labels come as a separate array;
- a dict ``{input name: array}``, cut the same way; its ``"y"`` entry, if any,
  holds the labels;
- a path to an ``.npz`` file holding ``x`` (single-input models) or one array
  per input name, and ``y`` for labels; rows are streamed from the file, never
  loaded whole;
- onnxruntime's ``CalibrationDataReader`` (anything with ``get_next()``), whose
  feeds are used as the batches they are (``rewind()`` is called before a
  second pass when the reader has it);
- any other iterable whose items are arrays, ``{input name: array}`` dicts or
  ``(input, target, ...)`` tuples, e.g. a torch DataLoader; items are used as
  the batches they already are, targets as labels.

Every batch is checked against the model's inputs (names, shape, dtype kind,
finite values, integer values for integer inputs) and cast to the input's
dtype. Memory stays at one batch. An input without a batch axis (a rank-0
setting) is given once and fed with every batch (``onnx_snn.io.constant_inputs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.constant_inputs import constant_value, dict_constants, npz_constants
from onnx_snn.io.npz import npz_batches, npz_files, npz_header, npz_keys_for, npz_rows, shape_text
from onnx_snn.io.reading import shown
from onnx_snn.validation import check_positive_int

Batch = dict[str, np.ndarray]
#: The array or dict key that holds labels.
LABELS = "y"


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype, and shape (None for a dynamic dim).
    ``batched``: whether the first axis is the batch; an input without one (a
    rank-0 setting) is a constant input, fed as it is with every batch."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]
    batched: bool = True

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
        specs.append(InputSpec(value.name, dtype, dims, batched=len(dims) > 0))
    return specs


@dataclass
class LabelledBatch:
    """One batch of inputs by name, with one integer label per sample."""

    feed: Batch
    labels: np.ndarray
    start: int  # index of the batch's first sample in the data


class DataSource:
    """The user's data, read in passes: a reader is rewound before each later pass,
    and a one-shot iterator (a generator) refuses a second pass instead of looking
    empty. Steps that read the same data several times (bias calibration) share one
    ``DataSource``."""

    def __init__(self, data: Any) -> None:
        self.data = data.data if isinstance(data, DataSource) else data
        if hasattr(self.data, "get_next") and not callable(self.data.get_next):
            raise OnnxSnnError(f"the data reader's get_next must be a method returning a "
                               f"batch dict or None, got {self.data.get_next!r}")
        self.passes = 0

    def start_pass(self) -> None:
        self.passes += 1
        if self.passes == 1:
            return
        if hasattr(self.data, "get_next"):
            if not callable(getattr(self.data, "rewind", None)):
                raise OnnxSnnError("the data reader has no rewind(), but this step reads the "
                                   "data more than once: give an array, an .npz path or a "
                                   "reader with rewind()")
            self.data.rewind()
        elif isinstance(self.data, Iterator):
            raise OnnxSnnError("the data is a one-shot iterator (a generator?), but this step "
                               "reads it more than once: give a list, an array, an .npz path "
                               "or a re-iterable loader")


class BatchStream:
    """Validated batches; iterable more than once when the source allows it.

    With ``labelled`` the items are ``LabelledBatch``es; ``labels`` gives them
    when the data itself carries none (an array or dict with a separate label
    array).
    """

    def __init__(self, source: Any, specs: list[InputSpec], batch_size: int,
                 labelled: bool = False, labels: Any = None) -> None:
        self.specs = specs
        self.batch_size = check_batch_size(batch_size)
        self.labelled = labelled
        self.source = source if isinstance(source, DataSource) else DataSource(source)
        self._labels = None if labels is None else np.asarray(labels)
        self.num_batches = _batch_count(self.source.data, specs, self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        self.source.start_pass()
        count = start = 0
        raw_batches = _raw_batches(self.source.data, self.specs, self.batch_size,
                                   self.labelled and self._labels is None)
        data = self.source.data
        file = f"{shown(data)}, " if isinstance(data, (str, Path)) else ""
        for index, raw in enumerate(raw_batches):
            where = f"{file}batch {index}"
            inputs, labels = _split_labels(raw) if self.labelled else (raw, None)
            feed = validate_batch(inputs, self.specs, where)
            rows = next(iter(feed.values())).shape[0]
            count += 1
            if self.labelled:
                if self._labels is not None:
                    labels = self._labels[start:start + rows]
                yield LabelledBatch(feed, check_labels(
                    labels, rows, where, start, lambda: self._label_source(where)), start)
            else:
                yield feed
            start += rows
        if count == 0:
            raise OnnxSnnError(f"{file.removesuffix(', ')}{': ' if file else ''}the data is "
                               "empty: no batch to read")
        if self._labels is not None and start != len(self._labels):
            raise OnnxSnnError(f"{len(self._labels)} labels for {start} samples: give one "
                               "label per sample")

    def _label_source(self, where: str) -> str:
        """Where the labels come from, for messages: the file, the array or the batch,
        with the labels' whole shape."""
        data = self.source.data
        if self._labels is not None:
            return f"the labels array {list(self._labels.shape)}"
        if isinstance(data, (str, Path)):
            shape = list(npz_header(Path(data), LABELS)[0])
            return f"labels '{LABELS}' {shape} in {shown(data)}"
        if isinstance(data, Mapping):
            return f"the data's labels '{LABELS}' {list(np.shape(data[LABELS]))}"
        return f"the labels of {where}"


def check_batch_size(batch_size: Any) -> int:
    """The batch size as a positive int; ``OnnxSnnError`` otherwise."""
    return check_positive_int(batch_size, "batch size")


def batches(data: Any, specs: list[InputSpec], batch_size: int = 100) -> BatchStream:
    """Validated batches of ``data`` for a model with inputs ``specs``."""
    return BatchStream(data, specs, batch_size)


def labelled_batches(data: Any, specs: list[InputSpec], batch_size: int = 100,
                     labels: Any = None) -> BatchStream:
    """``LabelledBatch``es of ``data``; ``labels`` when the data holds none (see module doc)."""
    raw = data.data if isinstance(data, DataSource) else data
    if labels is not None and not (_is_array_like(raw) or isinstance(raw, Mapping)):
        raise OnnxSnnError("separate labels go with an array or a dict of arrays; an .npz "
                           f"file or an iterable carries its own labels ('{LABELS}', or "
                           "(input, label) pairs)")
    return BatchStream(data, specs, batch_size, labelled=True, labels=labels)


def check_labels(labels: Any, rows: int, where: str, start: int = 0,
                 source: Callable[[], str] | None = None) -> np.ndarray:
    """One integer label per sample, as an int64 array [rows]: class indices [rows], or
    one-hot rows [rows, classes] (one 1, the rest 0; read as their argmax). ``start``
    numbers the rows in the whole data and ``source()`` names the labels in messages."""
    if labels is None:
        raise OnnxSnnError(f"{where}: no labels: give '{LABELS}' with the data, or "
                           "(input, label) pairs")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[0] == rows and labels.shape[1] >= 2 \
            and labels.dtype.kind in "fiub":
        return one_hot_labels(labels, start, source or (lambda: f"the labels of {where}"))
    if labels.ndim != 1 or labels.shape[0] != rows or labels.dtype.kind not in "iu":
        raise OnnxSnnError(f"{where}: labels must be integers, one per sample, or one-hot "
                           f"rows [N, classes]: got shape {list(labels.shape)} "
                           f"({labels.dtype}) for {rows} samples")
    above = np.flatnonzero(labels > np.iinfo(np.int64).max) if labels.dtype.kind == "u" else []
    if len(above):
        raise OnnxSnnError(f"{where}: label {int(labels[above[0]])} of sample "
                           f"{start + int(above[0])} is not a class index (at most "
                           f"{np.iinfo(np.int64).max})")
    return labels.astype(np.int64, copy=False)


def one_hot_labels(labels: np.ndarray, start: int = 0,
                   source: Callable[[], str] = lambda: "the labels") -> np.ndarray:
    """The class indices of one-hot rows [N, classes]; refuses the first row that is not
    one 1 among 0s (``start`` numbers the rows in the whole data)."""
    ones = labels == 1
    good = (ones | (labels == 0)).all(axis=1) & (ones.sum(axis=1) == 1)
    if not good.all():
        row = int(np.flatnonzero(~good)[0])
        values = labels[row].tolist()
        listed = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
        raise OnnxSnnError(f"{source()} are not one-hot: row {start + row} is [{listed}] "
                           "(give one-hot rows [N, classes], one 1 and the rest 0, or class "
                           "indices [N])")
    return ones.argmax(axis=1).astype(np.int64)


def has_labels(data: Any, labels: Any = None) -> bool:
    """Whether ``data`` (as ``labelled_batches`` takes it) comes with labels: ``labels``
    given, an .npz or dict with 'y'; an array has none; a reader or an iterable
    is taken to carry them (its items say)."""
    raw = data.data if isinstance(data, DataSource) else data
    if labels is not None:
        return True
    if isinstance(raw, (str, Path)):
        try:
            return LABELS in npz_files(Path(raw))
        except OnnxSnnError:  # not a readable .npz: the data reader says why
            return True
    if isinstance(raw, Mapping):
        return LABELS in raw
    return not _is_array_like(raw)


def validate_batch(raw: Any, specs: list[InputSpec], where: str) -> Batch:
    """Check a batch against the model inputs and cast it to their dtypes. The batched
    inputs come first in the result, so its first array has the batch's rows."""
    feed = _as_feed(raw, specs, where)
    sizes = set()
    for spec in sorted(specs, key=lambda s: not s.batched):
        array = feed.pop(spec.name)
        if array.dtype.kind not in "fiub":
            raise OnnxSnnError(f"{where}: input '{spec.name}' has dtype {array.dtype}; "
                               f"expected numbers ({spec.dtype})")
        if not spec.batched:
            feed[spec.name] = _cast(constant_value(array, spec, where), spec, where)
            continue
        if array.ndim != len(spec.shape):
            raise OnnxSnnError(f"{where}: input '{spec.name}' has shape {list(array.shape)}; "
                               f"expected {shape_text(spec.shape)}")
        for got, want in zip(array.shape[1:], spec.sample_shape):
            if want is not None and got != want:
                raise OnnxSnnError(f"{where}: input '{spec.name}' has shape "
                                   f"{list(array.shape)}; expected {shape_text(spec.shape)}")
        if array.shape[0] == 0:
            raise OnnxSnnError(f"{where}: input '{spec.name}' has no samples")
        feed[spec.name] = _cast(array, spec, where)
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise OnnxSnnError(f"{where}: inputs have different batch sizes {sorted(sizes)}")
    return feed


def _cast(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """``array`` in the input's dtype; refuses values the cast would change silently."""
    if spec.dtype.kind in "iu" and array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise OnnxSnnError(f"{where}: input '{spec.name}' contains NaN or Inf; it is an "
                               f"integer input ({spec.dtype})")
        if not (array == np.round(array)).all():
            raise OnnxSnnError(f"{where}: input '{spec.name}' holds fractions; it is an "
                               f"integer input ({spec.dtype})")
    if spec.dtype.kind in "iu" and array.size:
        info = np.iinfo(spec.dtype)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            outside = low if low < info.min else high
            raise OnnxSnnError(f"{where}: input '{spec.name}' holds {outside}, "
                               f"outside the range of {spec.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below
        cast = array.astype(spec.dtype, copy=False)
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        raise OnnxSnnError(f"{where}: input '{spec.name}' contains NaN or Inf")
    return cast


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


def _split_labels(raw: Any) -> tuple[Any, Any]:
    """(inputs, labels) of one raw batch: a dict's ``LABELS`` entry, or a pair's target."""
    if isinstance(raw, Mapping):
        return raw, raw.get(LABELS)
    if isinstance(raw, (tuple, list)) and len(raw) >= 2 and not _is_number_array(raw):
        return raw[0], raw[1]
    return raw, None


def _is_number_array(raw: Any) -> bool:
    """A plain nested list of numbers rather than an (input, target) tuple."""
    return isinstance(raw, list) and all(isinstance(v, (int, float, list)) for v in raw)


def _is_array_like(data: Any) -> bool:
    return isinstance(data, np.ndarray) or hasattr(data, "__array__")


def _batch_count(source: Any, specs: list[InputSpec], batch_size: int) -> int | None:
    """How many batches ``source`` will give, or None when it does not say."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        rows = npz_rows(path, npz_keys_for(path, [spec.name for spec in specs]), specs)
    elif _is_array_like(source):
        rows = int(np.shape(source)[0]) if np.ndim(source) else 0
    elif isinstance(source, Mapping):
        constants = dict_constants(source, specs)
        rows = max((int(np.shape(v)[0]) for k, v in source.items()
                    if np.ndim(v) and k not in constants), default=0)
    elif hasattr(source, "get_next"):
        return None
    elif isinstance(source, Iterable):
        try:
            return len(source)
        except (TypeError, NotImplementedError):
            return None
    else:
        raise OnnxSnnError(f"unsupported data of type {type(source).__name__}: give an array, "
                           "a dict of arrays, an .npz path, a CalibrationDataReader or an "
                           "iterable of batches")
    return -(-rows // batch_size)


def _raw_batches(source: Any, specs: list[InputSpec], batch_size: int,
                 npz_labels: bool) -> Iterator[Any]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        keys = npz_keys_for(path, [spec.name for spec in specs], LABELS if npz_labels else None)
        npz_rows(path, keys, specs)  # every header checked before any data is read
        constants = npz_constants(path, keys, specs)
        for batch in npz_batches(path, {n: k for n, k in keys.items() if n not in constants},
                                 batch_size, specs):
            yield {**batch, **constants}
    elif _is_array_like(source):
        array = np.asarray(source)
        if array.ndim == 0:
            raise OnnxSnnError("the data is a scalar; expected samples along axis 0")
        for start in range(0, array.shape[0], batch_size):
            yield array[start:start + batch_size]
    elif isinstance(source, Mapping):
        constants = dict_constants(source, specs)
        arrays = {k: np.asarray(v) for k, v in source.items() if k not in constants}
        rows = max((a.shape[0] for a in arrays.values() if a.ndim), default=0)
        for start in range(0, rows, batch_size):
            yield {**{k: a[start:start + batch_size] for k, a in arrays.items()}, **constants}
    elif hasattr(source, "get_next"):
        yield from iter(source.get_next, None)
    else:
        yield from source
