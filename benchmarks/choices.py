"""What the benchmark scripts share: picking names from a comma-separated option,
and naming the IFNode backend that onnx_snn sessions use."""

from __future__ import annotations

import sys


def pick(option: str | None, known: list[str], what: str) -> list[str]:
    """The names in ``option`` (comma-separated), all of ``known`` when it is None; an
    unknown name ends the script with a message."""
    if option is None:
        return known
    chosen = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        sys.exit(f"unknown {what} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return chosen


def backend() -> str:
    """Which IFNode backend onnx_snn sessions use (native kernel or function body)."""
    try:
        from onnx_snn.ops.native import native_status
    except ImportError:
        return "unknown"
    status = native_status()
    return f"native ({status.library})" if status.loadable else "ONNX function body"
