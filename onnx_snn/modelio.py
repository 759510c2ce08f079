"""Loading and saving models and JSON, with clear errors and atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import onnx
from google.protobuf.message import DecodeError

from onnx_snn.errors import OnnxSnnError

ModelLike = Union[str, os.PathLike, onnx.ModelProto]
#: Above this size a model is saved with its tensors in an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A ModelProto from a path (external data included) or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise OnnxSnnError(f"expected a model path or onnx.ModelProto, got {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        raise OnnxSnnError(f"{path}: no such model file")
    try:
        loaded = onnx.load(str(path))
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as error:
        raise OnnxSnnError(f"{path}: not a valid ONNX model ({_first_line(error)})") from None
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as error:
        raise OnnxSnnError(f"{path}: cannot load the model or its external data "
                           f"({_first_line(error)})") from None
    if not loaded.HasField("graph") or not loaded.graph.node:
        raise OnnxSnnError(f"{path}: not a valid ONNX model (no graph nodes)")
    return loaded


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Refuse an output path that would overwrite an input or cannot be written."""
    out = Path(output)
    for source in inputs:
        if source is not None and isinstance(source, (str, os.PathLike)) \
                and Path(source).resolve() == out.resolve():
            raise OnnxSnnError(f"{out}: output path is the same as the input; "
                               "choose another name (inputs are never overwritten)")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OnnxSnnError(f"{out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OnnxSnnError(f"{out}: directory {parent} is not writable")
    return out


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it in place."""
    path = Path(path)
    check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.",
                                    suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Save atomically; a model over ~1.8 GB keeps its tensors in ``<name>.data``.

    The .onnx file appears only once complete; the data file is written before it.
    """
    path = Path(path)
    if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))
    data_name = f"{path.name}.data"
    return atomic_write(path, lambda tmp: onnx.save(
        model, str(tmp), save_as_external_data=True, location=data_name))


def save_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
