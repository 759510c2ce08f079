"""The native kernel library (built from ``custom_ops/`` by pip install): IFNode and
the time ops of ``onnx_snn.ops.time_ops``.

``native_library_path()`` finds the library, for onnx_snn's own sessions and for
users of other onnxruntime bindings. ``register_native`` adds it to session
options; when it is missing or does not load, onnxruntime runs the ops'
function bodies instead (same spikes, slower) and a warning says so, once per
process. ``native_report()`` says which backend runs and why (``onnx-snn doctor``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnx_snn.errors import first_line
from onnx_snn.ops.function_bodies import IF_OP_TYPE
from onnx_snn.ops.if_node_model import if_node_model
from onnx_snn.version import __version__

#: File names of the library on Linux, macOS and Windows.
NATIVE_LIBRARY_NAMES = ("libonnx_snn_ops.so", "libonnx_snn_ops.dylib", "onnx_snn_ops.dll")
#: Environment variable that points at a library to use instead of the packaged one.
LIBRARY_ENV = "ONNX_SNN_OPS_LIBRARY"


def package_directories() -> list[str]:
    """The onnx_snn package's directories (an editable install has two: the sources,
    and where pip put the built library)."""
    return list(importlib.util.find_spec("onnx_snn").submodule_search_locations)


def native_library_path() -> Path | None:
    """Path of the native kernel library, or None when it was not built.

    ``$ONNX_SNN_OPS_LIBRARY`` wins when set; otherwise the library is looked up
    in the onnx_snn package directories (an editable install has two).
    """
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override) if Path(override).is_file() else None
    for directory in package_directories():
        for name in NATIVE_LIBRARY_NAMES:
            candidate = Path(directory) / name
            if candidate.is_file():
                return candidate.resolve()
    return None


@dataclass(frozen=True)
class NativeStatus:
    """Whether the native kernels can be used, and why not."""

    library: Path | None
    loadable: bool
    reason: str


@cache
def native_status() -> NativeStatus:
    """Find the library and try to register it once per process."""
    library = native_library_path()
    if library is None and os.environ.get(LIBRARY_ENV):
        return NativeStatus(None, False, f"${LIBRARY_ENV}={os.environ[LIBRARY_ENV]} is not a file")
    if library is None:
        return NativeStatus(None, False, f"no {NATIVE_LIBRARY_NAMES[0]} in "
                            f"{', '.join(package_directories())}: the build of custom_ops/ "
                            "failed or "
                            "was skipped at install time (`pip install -v` shows why)")
    try:
        ort.SessionOptions().register_custom_ops_library(str(library))
    except Exception as error:  # onnxruntime raises its own exception types
        return NativeStatus(library, False, f"{library} does not load: "
                            f"{first_line(error)}")
    return NativeStatus(library, True, f"it loads into onnxruntime {ort.__version__}, and every "
                        "onnx_snn session registers it")


def register_native(options: ort.SessionOptions) -> bool:
    """Register the native kernels in ``options``; warn once and return False if impossible."""
    status = native_status()
    if status.loadable:
        options.register_custom_ops_library(str(status.library))
        return True
    _warn_function_body(status.reason)
    return False


@cache
def _warn_function_body(reason: str) -> None:
    warnings.warn(f"native kernels (IFNode, time ops) unavailable, running the ONNX "
                  f"function bodies instead (same results, slower): {reason}", RuntimeWarning,
                  stacklevel=4)


def kernel_runs(options: ort.SessionOptions) -> bool:
    """True when a session with ``options`` runs IFNode as one native kernel.

    Profiles a one-node model (``options`` keep profiling turned on): with the
    kernel, the profile holds an IFNode node; with the function body, only the
    body's Scan and friends.
    """
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "probe")
        soft_reset = {"v_threshold": 1.0, "v_reset": 0.0, "v_init": 0.0, "hard_reset": 0,
                      "broadcast_input": 0}
        probe = if_node_model(soft_reset, [4, 8]).SerializeToString()
        session = ort.InferenceSession(probe, options, providers=["CPUExecutionProvider"])
        session.run(None, {"X": np.ones((4, 8), np.float32), "T": np.array(2, np.int64)})
        events = json.loads(Path(session.end_profiling()).read_text())
    return any(event.get("args", {}).get("op_name") == IF_OP_TYPE for event in events)


def native_report() -> dict[str, object]:
    """Which IFNode backend onnx_snn sessions use, and why."""
    status = native_status()
    options = ort.SessionOptions()
    native = status.loadable and register_native(options) and kernel_runs(options)
    return {"backend": "native" if native else "function",
            "library": str(status.library) if status.library else None,
            "reason": status.reason if not status.loadable or native else
            f"{status.library} registered, but onnxruntime still runs the function body",
            "onnxruntime": ort.__version__, "onnx_snn": __version__}
