"""Writing outputs safely: all of a command's outputs together, or none.

An ``OutputSet`` stages each output in full (a temporary file or folder beside
its destination) as it is added, and ``commit`` moves them all into place. If
anything fails before the commit (an error, a full disk, SIGINT, SIGTERM), the
staged files are removed and no destination changes; the commit itself runs
with SIGINT, SIGTERM and SIGHUP held (``signals_deferred``), so it is never cut
in half. Rules for destinations (checked in ``onnx_snn.io.destinations``):

- a symbolic link is followed: its target is written, the link stays;
- an existing regular file is replaced atomically (rename), keeping its mode;
- an open descriptor (``/dev/stdout``, ``/dev/fd/3``, or the file that stdout or
  stderr writes to) is written through, as the shell opened it (appending or at
  its offset), never truncated or replaced;
- a character device or FIFO (``/dev/null``, a named pipe) is written through;
  other special files are refused;
- a folder output (``report``'s OUTDIR) replaces an existing folder only if that
  folder holds nothing but files the same output writes;
- one command never writes two outputs to the same place, nor one inside
  another's folder;
- at commit, each destination must still be what it was when it was checked:
  nothing that appeared meanwhile is replaced or deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.destinations import (
    check_output_path,
    destination,
    is_stream,
    kind_of,
    open_descriptor,
    refuse_overlap,
    signals_deferred,
)


def _default_mode(full: int = 0o666) -> int:
    """What ``open()`` (0666) or ``mkdir`` (0777) would give: ``full`` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


@dataclass
class _Staged:
    """One output: its destination, and the staged file or folder that becomes it."""

    requested: Path
    target: Path
    staged: Path
    cleanup: Path  # what to delete if the output is discarded
    folder: bool = False
    stream: bool = False  # written through (a descriptor, device or pipe), not renamed
    fd: int | None = None  # the open descriptor it is written through
    found: tuple[int, int] | None = None  # (device, inode) of the folder it replaces
    owned: frozenset[str] = frozenset()  # names a folder output may replace
    companions: tuple[Path, ...] = ()  # more staged files moved beside the target


class OutputSet:
    """The outputs of one command, staged as they are added and committed together.

    Use as a context manager: the outputs are committed when the block ends
    normally and discarded when it raises. ``written`` lists the paths committed.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self._scratch: Path | None = None
        self._created: list[Path] = []  # folders made for the outputs, removed if discarded
        self.written: list[Path] = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    @property
    def pending(self) -> bool:
        """Whether outputs are staged and not yet committed."""
        return bool(self._staged)

    # ------------------------------------------------------------------ staging

    def _add(self, path: str | os.PathLike, folder: bool,
             make: Callable[[Path, bool], Path], companion_dir: bool = False) -> _Staged:
        """Check ``path`` and stage it: ``make(target, stream)`` creates the staged file or
        folder, registered at once so that no signal can leave it behind."""
        target = destination(path)
        for entry in self._staged:
            refuse_overlap(path, target, folder, entry.requested, entry.target, entry.folder)
        check_output_path(path, folder=folder)
        fd = open_descriptor(path)
        stream = fd is not None or is_stream(target)
        with signals_deferred():
            staged = make(target, stream)
            entry = _Staged(Path(path), target, staged / target.name if companion_dir
                            else staged, staged, folder, stream, fd)
            self._staged.append(entry)
        return entry

    def _stage_dir(self, target: Path, stream: bool) -> Path:
        """Where a file for ``target`` is staged: beside it, or in a scratch folder for a
        descriptor, device or pipe."""
        if not stream:
            return target.parent
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="onnx_snn_out."))
        return self._scratch

    def add_file(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        """Stage ``write(staged_path)`` as the output ``path``; returns ``path``."""
        def make(target: Path, stream: bool) -> Path:
            fd, staged = tempfile.mkstemp(dir=self._stage_dir(target, stream),
                                          prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            return Path(staged)

        entry = self._add(path, False, make)
        try:
            write(entry.staged)
            os.chmod(entry.staged, _default_mode())  # mkstemp creates 0600
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from error
        return Path(path)

    def add_text(self, path: str | os.PathLike, text: str) -> Path:
        return self.add_file(path, lambda staged: staged.write_text(text))

    def add_json(self, path: str | os.PathLike, data: Any) -> Path:
        """Stage ``data`` as indented JSON."""
        return self.add_text(path, json.dumps(data, indent=2) + "\n")

    def add_files(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        """Stage an output that may come with companion files (a model's external data):
        ``write(folder / name)`` writes the main file and its companions in ``folder``."""
        if open_descriptor(path) is not None or is_stream(destination(path)):
            raise OnnxSnnError(f"{path}: a model with an external data file cannot be "
                               "written to a device or pipe")
        entry = self._add(path, False, lambda target, _: Path(tempfile.mkdtemp(
            dir=target.parent, prefix=f".{target.name}.")), companion_dir=True)
        try:
            write(entry.staged)
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from error
        entry.companions = tuple(p for p in entry.cleanup.iterdir() if p != entry.staged)
        for staged in (entry.staged, *entry.companions):
            os.chmod(staged, _default_mode())
        return Path(path)

    def add_folder(self, path: str | os.PathLike, fill: Callable[[Path], Collection[str]]
                   ) -> Path:
        """Stage a folder output: ``fill(staged_folder)`` writes its files and returns the
        names that it may write (an existing folder is replaced only if it holds nothing
        else)."""
        entry = self._add(path, True, lambda target, _: Path(tempfile.mkdtemp(
            dir=target.parent, prefix=f".{target.name}.")))
        os.chmod(entry.staged, _default_mode(0o777))  # mkdtemp creates 0700
        try:
            entry.owned = frozenset(fill(entry.staged))
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from error
        with contextlib.suppress(FileNotFoundError):
            found = os.stat(entry.target)
            entry.found = (found.st_dev, found.st_ino)
        _check_still(entry)
        return Path(path)

    def make_folders(self, path: str | os.PathLike) -> Path:
        """Create the folder ``path`` (and missing parents) for outputs to go in; a
        discard removes those it created, if they are still empty."""
        if not str(path):
            raise OnnxSnnError("an output folder is empty (''); expected a folder name")
        missing = []
        for folder in (Path(path), *Path(path).parents):
            if os.path.isdir(folder):
                break
            missing.append(folder)
        try:
            for folder in reversed(missing):
                with signals_deferred():
                    folder.mkdir()
                    self._created.append(folder)
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot create the folder "
                               f"({error.strerror or error})") from error
        return Path(path)

    # ------------------------------------------------------------------ commit

    def commit(self) -> None:
        """Put every staged output in place, or none: descriptors, devices and pipes are
        written through first, then the files are renamed, with signals held."""
        opened: dict[int, int] = {}
        try:
            for index, entry in enumerate(self._staged):  # a FIFO may wait for a reader
                if entry.stream and entry.fd is None:
                    opened[index] = _open_stream(entry)
            with signals_deferred():
                for entry in self._staged:
                    _check_still(entry)
                for index, entry in enumerate(self._staged):
                    if entry.stream:
                        _write_through(entry, opened.get(index))
                self._rename_all()
                self.written = [entry.requested for entry in self._staged]
                self._created = []
                self.discard()
        except BaseException:
            self.discard()
            raise
        finally:
            for fd in opened.values():
                os.close(fd)

    def _rename_all(self) -> None:
        moved: list[tuple[Path, Path | None]] = []  # (target, what it replaced, set aside)
        entry = None
        try:
            for entry in self._staged:
                if entry.stream:
                    continue
                for staged in entry.companions:
                    moved.append(_move(staged, entry.target.parent / staged.name, False))
                moved.append(_move(entry.staged, entry.target, entry.folder))
        except OSError as error:
            for target, backup in reversed(moved):  # put back what was there
                _remove(target)
                if backup is not None:
                    os.rename(backup, target)
            raise OnnxSnnError(f"{entry.requested}: cannot write "
                               f"({error.strerror or error})") from error
        for _, backup in moved:
            if backup is not None:
                _remove(backup)

    def discard(self) -> None:
        """Remove whatever is still staged, and the folders made for it."""
        with signals_deferred():
            for entry in self._staged:
                _remove(entry.cleanup)
            if self._scratch is not None:
                _remove(self._scratch)
                self._scratch = None
            self._staged = []
            for folder in reversed(self._created):
                with contextlib.suppress(OSError):  # not empty: someone else's files
                    folder.rmdir()
            self._created = []


def _check_still(entry: _Staged) -> None:
    """Refuse a destination that changed since it was checked: a file output must be a
    regular file or absent, a folder output the folder it was (holding only its own
    names) or absent as it was, a stream still a device or pipe."""
    if entry.fd is not None:
        return
    try:
        mode = os.lstat(entry.target).st_mode
    except FileNotFoundError:
        mode = None
    if entry.stream:
        ok = mode is not None and is_stream(entry.target)
    elif not entry.folder:
        ok = mode is None or stat.S_ISREG(mode)
    else:
        found = os.stat(entry.target) if mode is not None and stat.S_ISDIR(mode) else None
        ok = (None if found is None else (found.st_dev, found.st_ino)) == entry.found
        foreign = sorted(set(os.listdir(entry.target)) - entry.owned) if found else []
        if foreign:
            raise OnnxSnnError(f"{entry.requested}: the folder holds files this command does "
                               f"not write ({', '.join(foreign[:3])}); choose a new or empty "
                               "folder")
    if not ok:
        got = "nothing" if mode is None else f"a {kind_of(mode)}" if not stat.S_ISREG(mode) \
            else "a regular file"
        raise OnnxSnnError(f"{entry.requested}: changed while the command ran (now "
                           f"{got}); nothing was written, and it is left as it is")


def _open_stream(entry: _Staged) -> int:
    """Open a device or pipe for writing: never created, never truncated."""
    try:
        fd = os.open(entry.target, os.O_WRONLY | os.O_NOCTTY)
    except OSError as error:
        raise OnnxSnnError(f"{entry.requested}: cannot write "
                           f"({error.strerror or error})") from error
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise OnnxSnnError(f"{entry.requested}: changed while the command ran (now a "
                           f"{'regular file' if stat.S_ISREG(mode) else kind_of(mode)}); "
                           "nothing was written")
    return fd


def _write_through(entry: _Staged, fd: int | None) -> None:
    """Copy the staged file to its open descriptor, device or pipe (``fd`` when opened)."""
    if entry.fd is not None:
        for stream in (sys.stdout, sys.stderr):  # what was printed comes first
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    try:
        with open(entry.staged, "rb") as data, \
                open(os.dup(entry.fd if fd is None else fd), "wb") as stream:
            shutil.copyfileobj(data, stream)
    except OSError as error:
        raise OnnxSnnError(f"{entry.requested}: cannot write "
                           f"({error.strerror or error})") from error


def _move(staged: Path, target: Path, folder: bool) -> tuple[Path, Path | None]:
    """Rename ``staged`` to ``target``. A file replaced keeps its mode and is kept aside
    (a hard link, so it never goes missing; a folder is renamed) and returned, so a
    failed commit can put it back. Only a regular file or, for a folder output, a
    folder is ever set aside."""
    backup = None
    if os.path.lexists(target):
        mode = os.lstat(target).st_mode
        if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
            raise OSError(f"{target} is now a {kind_of(mode)}")
        backup = target.parent / f".{target.name}.{os.getpid()}.{id(staged)}.old"
        if folder:
            os.rename(target, backup)
        else:
            os.chmod(staged, stat.S_IMODE(mode))
            try:
                os.link(target, backup)
            except OSError:
                os.rename(target, backup)
    try:
        os.replace(staged, target)
    except OSError:
        if backup is not None and not os.path.lexists(target):  # set aside by rename
            os.rename(backup, target)
        elif backup is not None:  # a file linked aside: it is still in place
            backup.unlink()
        raise
    return target, backup


def _remove(path: Path) -> None:
    """Delete a file or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """One output written by ``write(staged_path)``, committed on its own."""
    with OutputSet() as outputs:
        return outputs.add_file(path, write)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """One JSON output, committed on its own."""
    with OutputSet() as outputs:
        return outputs.add_json(path, data)
