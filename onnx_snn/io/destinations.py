"""Where an output goes, and whether it may be written there (``onnx_snn.io.outputs``
stages and commits): links followed, open descriptors (``/dev/stdout``, ``/dev/fd/N``,
the file stdout writes to) recognised, inputs and special files refused, two outputs
at one place (or one inside another's folder) refused; and ``signals_deferred``, which
holds SIGINT, SIGTERM and SIGHUP while files are created or committed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import stat
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

from onnx_snn.errors import OnnxSnnError

#: The signals that interrupt a command; a commit holds them until it is done.
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))
_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"/(?:dev/fd|proc/(?P<pid>self|thread-self|\d+)(?:/task/\d+)?/fd)"
                      r"/(?P<fd>\d+)")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while the block runs, then let the first that came
    act as it would have (its handler raises, or its default action ends the process).

    Python handlers run only in the main thread, whichever thread the signal reaches, so
    the handlers are swapped rather than the thread's signal mask (onnxruntime's threads
    would still take a blocked signal). Elsewhere than the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}
    for signum in previous:
        signal.signal(signum, lambda got, frame: caught.append(got))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])


def destination(path: str | os.PathLike) -> Path:
    """Where writing ``path`` really goes: links followed, relative to the cwd."""
    if not isinstance(path, (str, os.PathLike)):
        raise OnnxSnnError(f"an output path must be a str or os.PathLike, got {path!r}")
    return Path(os.path.realpath(path))


def is_stream(path: Path) -> bool:
    """A character device or FIFO: written through, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def open_descriptor(path: str | os.PathLike) -> int | None:
    """The descriptor that ``path`` writes through: N for ``/dev/fd/N``,
    ``/proc/self/fd/N``, ``/dev/stdout`` and links to them, else 1 or 2 when ``path``
    is the file that stdout or stderr is open on, else None."""
    current = os.path.abspath(path)
    for _ in range(40):  # a loop of links ends here; realpath then reports it
        current = os.path.join(os.path.realpath(os.path.dirname(current)),
                               os.path.basename(current))
        match = _FD_PATH.fullmatch(current)
        if current in _STANDARD:
            return _STANDARD[current]
        if match and match["pid"] in (None, "self", "thread-self", str(os.getpid())):
            return int(match["fd"])
        if not os.path.islink(current):
            break
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    with contextlib.suppress(OSError):
        found = os.stat(path)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                opened = os.fstat(fd)
                if (opened.st_dev, opened.st_ino) == (found.st_dev, found.st_ino):
                    return fd
    return None


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike | None,
                      folder: bool = False) -> Path:
    """Refuse an output that would overwrite an input, is an unsuitable file, or
    cannot be written. Returns where the output goes.

    Writability is probed by creating (and removing) a file in the folder,
    since permission bits do not stop root and read-only file systems do.
    """
    if not str(output):
        raise OnnxSnnError("an output path is empty (''); expected a file name")
    out = Path(output)
    target = destination(out)
    for source in inputs:
        if source is not None and (destination(source) == target or _same_file(source, out)):
            raise OnnxSnnError(f"{out}: output path is the same as the input {source}; "
                               "choose another name (inputs are never overwritten)")
    fd = open_descriptor(out)
    if fd is not None:
        if folder:
            raise OnnxSnnError(f"{out}: is an open descriptor (fd {fd}), not a folder")
        try:
            access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError as error:
            raise OnnxSnnError(f"{out}: descriptor {fd} is not open") from error
        if access == os.O_RDONLY:
            raise OnnxSnnError(f"{out}: descriptor {fd} is open for reading only; "
                               "expected one open for writing")
        return target
    if os.path.lexists(target):
        mode = os.stat(target).st_mode
        if folder and not stat.S_ISDIR(mode):
            raise OnnxSnnError(f"{out}: exists and is not a folder")
        if not folder and stat.S_ISDIR(mode):
            raise OnnxSnnError(f"{out}: is a folder; give a file name")
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or is_stream(target)):
            raise OnnxSnnError(f"{out}: is a {kind_of(mode)}; onnx-snn writes regular files, "
                               "character devices and pipes")
        if is_stream(target):
            return target
    parent = target.parent
    if not parent.is_dir():
        raise OnnxSnnError(f"{out}: directory {parent} does not exist")
    try:
        with signals_deferred():  # the probe never stays behind
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise OnnxSnnError(f"{out}: cannot write in {parent} ({error.strerror})") from error
    return target


def check_apart(outputs: Collection[tuple[str | os.PathLike, bool]]) -> None:
    """Refuse two outputs (path, is a folder) at one place, or one inside another's
    folder, before anything is written."""
    seen: list[tuple[str | os.PathLike, Path, bool]] = []
    for path, folder in outputs:
        target = destination(path)
        for other, other_target, other_folder in seen:
            refuse_overlap(path, target, folder, other, other_target, other_folder)
        seen.append((path, target, folder))


def refuse_overlap(path, target: Path, folder: bool, other, other_target: Path,
                    other_folder: bool) -> None:
    if target == other_target:
        raise OnnxSnnError(f"{path}: given for two outputs ({other} too); "
                           "each output needs its own path")
    if other_folder and target.is_relative_to(other_target):
        inner, outer = path, other
    elif folder and other_target.is_relative_to(target):
        inner, outer = other, path
    else:
        return
    raise OnnxSnnError(f"{inner}: lies inside the output folder {outer}, which is "
                       "replaced whole; give a path outside it")


def _same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def kind_of(mode: int) -> str:
    for test, name in [(stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISFIFO, "pipe"),
                       (stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link")]:
        if test(mode):
            return name
    return "special file"
