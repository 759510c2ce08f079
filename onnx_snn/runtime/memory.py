"""How much memory a run may use: what the machine, the cgroup and the process limits
really leave, and the share of it a run takes (docs/chunked-execution.md).

``available_memory`` is the least of: the kernel's MemAvailable, a cgroup v2 or v1
memory limit less its usage, and the address-space limit (RLIMIT_AS) less this
process's virtual size. ``memory_budget`` is ``--memory-limit`` / ``memory_limit``
when given, else ``DEFAULT_SHARE`` of what is available.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path

from onnx_snn.errors import OnnxSnnError

#: The share of the available memory a run plans to use when no limit is given: the
#: rest is left for onnxruntime's own buffers, the outputs and other processes.
DEFAULT_SHARE = 0.5
_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "KIB": 2**10, "M": 1e6, "MB": 1e6,
          "MIB": 2**20, "G": 1e9, "GB": 1e9, "GIB": 2**30, "T": 1e12, "TB": 1e12,
          "TIB": 2**40, "P": 1e15, "PB": 1e15, "PIB": 2**50}


def parse_size(text: str | int | float, what: str = "memory limit") -> int:
    """Bytes of a size such as ``2GB``, ``512MiB``, ``1.5G`` or a plain number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        size = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise OnnxSnnError(f"{what}: expected a size such as 2GB, 512MiB or 1.5G, "
                               f"got {text!r}")
        size = float(match.group(1)) * _UNITS[unit]
    if not size >= 1 or size != size or size == float("inf"):
        raise OnnxSnnError(f"{what}: expected a positive size, got {text!r}")
    return int(size)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cgroup_left(root: Path = Path("/sys/fs/cgroup"),
                membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The memory limit of this process's cgroup less the group's usage (v2 or v1, as
    ``membership`` lists the groups under ``root``); None if there is no limit."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: 0::/path
            group = root / path.lstrip("/")
            limit, usage = _read_int(group / "memory.max"), _read_int(group / "memory.current")
        elif "memory" in controllers.split(","):
            group = root / "memory" / path.lstrip("/")
            if not group.exists():
                group = root / "memory"
            limit = _read_int(group / "memory.limit_in_bytes")
            usage = _read_int(group / "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and limit < 2**60:
            return max(limit - (usage or 0), 0)
    return None


def _address_space_left() -> int | None:
    """RLIMIT_AS less this process's virtual size; None if unlimited."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        status = Path("/proc/self/status").read_text()
        size = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024
    except (OSError, AttributeError):
        size = 0
    return max(soft - size, 0)


def available_memory() -> int | None:
    """Bytes a new allocation can really get (None where nothing says)."""
    known = [left for left in (_meminfo_available(), cgroup_left(), _address_space_left())
             if left is not None]
    return min(known) if known else None


#: Blocks from this size up get their own mappings from glibc once a run plans.
MAPPED_FROM = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _map_large_blocks() -> None:
    """Have glibc's malloc map blocks of ``MAPPED_FROM`` bytes and up on their own and
    unmap them when freed. By default it raises that threshold as blocks are freed and
    then serves them from heaps that fragment and grow past any plan: threshold
    balancing on a ResNet-18 at 224x224 under a 1 GB limit peaked at 2,068 MB, against
    1,086 MB mapped (for 1.3x the time), and an eval planned for 246 MB filled a 512 MiB
    cgroup, against 125 MB mapped. A no-op where the C library has no ``mallopt``."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MAPPED_FROM)
    except (OSError, AttributeError):
        pass


#: The process-wide limit (``set_memory_limit``, the CLI's ``--memory-limit``).
_process_limit: int | None = None
#: Whether runs say on stderr how they were cut (the CLI's ``--verbose``).
_announce = False
#: What ``announce`` has printed since: each message once.
_announced: set[str] = set()


def set_memory_limit(limit: str | int | float | None, announce: bool = False) -> None:
    """Plan every run of this process for ``limit`` (a size; None: the default share);
    ``announce``: say on stderr how each chunked run is cut."""
    global _process_limit, _announce
    _process_limit = None if limit is None else parse_size(limit)
    _announce = announce
    _announced.clear()


def announce(message: str) -> None:
    """Print ``message`` on stderr, once, when ``set_memory_limit(..., announce=True)``."""
    if _announce and message not in _announced:
        _announced.add(message)
        print(f"onnx-snn: {message}", file=sys.stderr)


def memory_budget(limit: str | int | float | None = None) -> int | None:
    """The bytes a run plans for: ``limit`` (a size, see ``parse_size``) when given, else
    the process-wide limit, else ``DEFAULT_SHARE`` of ``available_memory()`` (None
    where that is unknown). From the first plan on, glibc maps large blocks on their
    own (``_map_large_blocks``), so that the heap keeps to the plans."""
    _map_large_blocks()
    if limit is not None:
        return parse_size(limit)
    if _process_limit is not None:
        return _process_limit
    available = available_memory()
    return None if available is None else int(available * DEFAULT_SHARE)
