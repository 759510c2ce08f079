"""Loading and saving models, with clear errors and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError

from onnx_snn.errors import OnnxSnnError, first_line
from onnx_snn.io.outputs import OutputSet
from onnx_snn.io.reading import check_regular, shown

ModelLike = Union[str, os.PathLike, onnx.ModelProto]
#: Above this size a model is saved with its tensors in an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
#: protobuf cannot hold, copy or serialize a model above 2 GiB in one message.
MAX_MODEL_BYTES = 2**31 - 1


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A ModelProto from a path (external data included) or a ModelProto. Every file is
    checked to be a regular file, and their sizes, before it is read."""
    if isinstance(model, onnx.ModelProto):
        _check_size(Path("the model"), model.ByteSize())
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise OnnxSnnError(f"expected a model path or onnx.ModelProto, got {type(model).__name__}")
    path = Path(model)
    _check_size(path, check_regular(path, "model file").st_size)
    try:
        loaded = onnx.load(str(path), load_external_data=False)
        _check_size(path, path.stat().st_size + _external_bytes(loaded, path.parent))
        onnx.load_external_data_for_model(loaded, str(path.parent))
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as error:
        raise OnnxSnnError(f"{shown(path)}: not a valid ONNX model "
                           f"({first_line(error)})") from error
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as error:
        raise OnnxSnnError(f"{shown(path)}: cannot load the model or its external data "
                           f"({first_line(error)})") from error
    if not loaded.HasField("graph") or not loaded.graph.node:
        raise OnnxSnnError(f"{shown(path)}: not a valid ONNX model (no graph nodes)")
    return loaded


def _locations(model: onnx.ModelProto) -> set[str]:
    """The external data files a model's tensors name."""
    return {entry.value for tensor in model.graph.initializer
            for entry in tensor.external_data if entry.key == "location"}


def _external_bytes(model: onnx.ModelProto, base: Path) -> int:
    """Total size of the external data files a model refers to; each one that exists
    must be a regular file (onnx names a missing one)."""
    return sum(check_regular(base / location, "external data file").st_size
               for location in _locations(model) if os.path.lexists(base / location))


def _check_size(path: Path, size: int) -> None:
    if size > MAX_MODEL_BYTES:
        raise OnnxSnnError(f"{shown(path)}: the model is {size:,} bytes with its external "
                           "data; onnx-snn converts models up to 2 GiB (the protobuf limit)")


def model_files(path: str | os.PathLike) -> list[Path]:
    """A model file and the external data files it refers to (those that exist); only
    the file itself when it is no regular file of a model's size (not read)."""
    path = Path(path)
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_MODEL_BYTES:
            return [path]
        header = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model: only the file itself is an input
        return [path]
    return [path, *(path.parent / name for name in sorted(_locations(header)))]


def check_loads(staged: Path, path: str | os.PathLike) -> None:
    """Refuse a written model that the ONNX checker or plain onnxruntime (no custom op
    library: the model's own function bodies) would not load, naming what it says."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the refusal comes back as the exception
    try:
        onnx.checker.check_model(str(staged))
        onnxruntime.InferenceSession(str(staged), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # the checker and onnxruntime raise several internal types
        raise OnnxSnnError(f"{path}: the model made here would not load in onnxruntime, so "
                           f"nothing was written ({first_line(error)})") from error


def stage_model(outputs: OutputSet, model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Stage ``model`` as the output ``path`` of ``outputs``, once the staged file loads in
    plain onnxruntime (``check_loads``); a model over ~1.8 GB keeps its tensors in
    ``<name>.data`` beside it."""
    if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        def write(staged: Path) -> None:
            onnx.save(model, str(staged))
            check_loads(staged, path)

        return outputs.add_file(path, write)
    data_name = f"{Path(path).name}.data"

    def write_external(staged: Path) -> None:
        external = onnx.ModelProto()
        external.CopyFrom(model)  # saving with external data moves the tensors out of the proto
        # Tensors under 1 KB stay inline: shape inference must read shape constants.
        onnx.save(external, str(staged), save_as_external_data=True, location=data_name)
        check_loads(staged, path)

    return outputs.add_files(path, write_external)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Save atomically (``onnx_snn.io.outputs``); a model over ~1.8 GB keeps its tensors in
    ``<name>.data``, and both files appear together."""
    with OutputSet() as outputs:
        return stage_model(outputs, model, path)
