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
#: protobuf cannot hold, copy or serialize a model above 2 GiB in one message.
MAX_MODEL_BYTES = 2**31 - 1


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A ModelProto from a path (external data included) or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        _check_size(Path("the model"), model.ByteSize())
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise OnnxSnnError(f"expected a model path or onnx.ModelProto, got {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        raise OnnxSnnError(f"{path}: no such model file")
    try:
        loaded = onnx.load(str(path), load_external_data=False)
        _check_size(path, path.stat().st_size + _external_bytes(loaded, path.parent))
        onnx.load_external_data_for_model(loaded, str(path.parent))
    except (DecodeError, RuntimeWarning, ValueError, TypeError) as error:
        raise OnnxSnnError(f"{path}: not a valid ONNX model ({_first_line(error)})") from None
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as error:
        raise OnnxSnnError(f"{path}: cannot load the model or its external data "
                           f"({_first_line(error)})") from None
    if not loaded.HasField("graph") or not loaded.graph.node:
        raise OnnxSnnError(f"{path}: not a valid ONNX model (no graph nodes)")
    return loaded


def _external_bytes(model: onnx.ModelProto, base: Path) -> int:
    """Total size of the external data files a model refers to."""
    locations = {entry.value for tensor in model.graph.initializer
                 for entry in tensor.external_data if entry.key == "location"}
    return sum((base / location).stat().st_size for location in locations
               if (base / location).is_file())


def _check_size(path: Path, size: int) -> None:
    if size > MAX_MODEL_BYTES:
        raise OnnxSnnError(f"{path}: the model is {size:,} bytes with its external data; "
                           "onnx-snn converts models up to 2 GiB (the protobuf limit)")


def model_files(path: str | os.PathLike) -> list[Path]:
    """A model file and the external data files it refers to (those that exist)."""
    path = Path(path)
    try:
        header = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model: only the file itself is an input
        return [path]
    locations = {entry.value for tensor in header.graph.initializer
                 for entry in tensor.external_data if entry.key == "location"}
    return [path, *(path.parent / name for name in sorted(locations))]


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Refuse an output path that would overwrite an input or cannot be written.

    Writability is probed by creating (and removing) a file in the directory,
    since permission bits do not stop root and read-only file systems do.
    """
    out = Path(output)
    for source in inputs:
        if source is not None and Path(source).resolve() == out.resolve():
            raise OnnxSnnError(f"{out}: output path is the same as the input {source}; "
                               "choose another name (inputs are never overwritten)")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OnnxSnnError(f"{out}: directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OnnxSnnError(f"{out}: cannot write in {parent} ({error.strerror})") from None
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
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except OSError as error:
        raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _default_file_mode() -> int:
    """What ``open()`` would give a new file: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Save atomically; a model over ~1.8 GB keeps its tensors in ``<name>.data``.

    Both files are written in a temporary folder beside ``path`` and then moved
    in place, the data file first, so the .onnx appears only once complete.
    """
    path = Path(path)
    if model.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))
    check_output_path(path)
    data_name = f"{path.name}.data"
    external = onnx.ModelProto()
    external.CopyFrom(model)  # saving with external data moves the tensors out of the proto
    with tempfile.TemporaryDirectory(dir=path.resolve().parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        try:
            # Tensors under 1 KB stay inline: shape inference must read shape constants.
            onnx.save(external, str(staged), save_as_external_data=True, location=data_name)
            if staged.with_name(data_name).exists():
                os.replace(staged.with_name(data_name), path.with_name(data_name))
            os.replace(staged, path)
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from None
    return path


def save_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
