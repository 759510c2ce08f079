"""Writing outputs safely: all of a command's outputs together, or none.

An ``OutputSet`` stages each output in full (a temporary file or folder beside
its destination) as it is added, and ``commit`` moves them all into place. If
anything fails before the commit (an error, a full disk, SIGINT, SIGTERM), the
staged files are removed and no destination changes. Rules for destinations:

- a symbolic link is followed: its target is written, the link stays;
- an existing regular file is replaced atomically (rename);
- a character device or FIFO (``/dev/null``, ``/dev/stdout``, a pipe) is
  written through, never replaced; other special files are refused;
- a folder output (``report``'s OUTDIR) replaces an existing folder only if that
  folder holds nothing but files the same output writes;
- one command never writes two outputs to the same place.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnx_snn.errors import OnnxSnnError


def _default_mode(full: int = 0o666) -> int:
    """What ``open()`` (0666) or ``mkdir`` (0777) would give: ``full`` less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def destination(path: str | os.PathLike) -> Path:
    """Where writing ``path`` really goes: links followed, relative to the cwd."""
    return Path(os.path.realpath(path))


def is_stream(path: Path) -> bool:
    """A character device or FIFO: written through, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike | None,
                      folder: bool = False) -> Path:
    """Refuse an output that would overwrite an input, is an unsuitable file, or
    cannot be written. Returns where the output goes.

    Writability is probed by creating (and removing) a file in the folder,
    since permission bits do not stop root and read-only file systems do.
    """
    out = Path(output)
    target = destination(out)
    for source in inputs:
        if source is not None and destination(source) == target:
            raise OnnxSnnError(f"{out}: output path is the same as the input {source}; "
                               "choose another name (inputs are never overwritten)")
    if os.path.lexists(target):
        mode = os.stat(target).st_mode
        if folder and not stat.S_ISDIR(mode):
            raise OnnxSnnError(f"{out}: exists and is not a folder")
        if not folder and stat.S_ISDIR(mode):
            raise OnnxSnnError(f"{out}: is a folder; give a file name")
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or is_stream(target)):
            raise OnnxSnnError(f"{out}: is a {_kind(mode)}; onnx-snn writes regular files, "
                               "character devices and pipes")
        if is_stream(target):
            return target
    parent = target.parent
    if not parent.is_dir():
        raise OnnxSnnError(f"{out}: directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OnnxSnnError(f"{out}: cannot write in {parent} ({error.strerror})") from None
    return target


def _kind(mode: int) -> str:
    for test, name in [(stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISFIFO, "pipe")]:
        if test(mode):
            return name
    return "special file"


@dataclass
class _Staged:
    """One output: its destination, and the staged file or folder that becomes it."""

    requested: Path
    target: Path
    staged: Path
    cleanup: Path  # what to delete if the output is discarded
    companions: tuple[Path, ...] = ()  # more staged files moved beside the target


class OutputSet:
    """The outputs of one command, staged as they are added and committed together.

    Use as a context manager: the outputs are committed when the block ends
    normally and discarded when it raises.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self._scratch: Path | None = None

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    # ------------------------------------------------------------------ staging

    def _target(self, path: str | os.PathLike, folder: bool = False) -> Path:
        target = check_output_path(path, folder=folder)
        for entry in self._staged:
            if entry.target == target:
                raise OnnxSnnError(f"{path}: given for two outputs ({entry.requested} too); "
                                   "each output needs its own path")
        return target

    def _stage_dir(self, target: Path) -> Path:
        """Where a file for ``target`` is staged: beside it, or in a scratch folder for a
        device or pipe."""
        if not is_stream(target):
            return target.parent
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="onnx_snn_out."))
        return self._scratch

    def add_file(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        """Stage ``write(staged_path)`` as the output ``path``; returns ``path``."""
        target = self._target(path)
        fd, staged = tempfile.mkstemp(dir=self._stage_dir(target), prefix=f".{target.name}.",
                                      suffix=".tmp")
        os.close(fd)
        entry = _Staged(Path(path), target, Path(staged), Path(staged))
        self._staged.append(entry)
        try:
            write(entry.staged)
            os.chmod(entry.staged, _default_mode())  # mkstemp creates 0600
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from None
        return Path(path)

    def add_text(self, path: str | os.PathLike, text: str) -> Path:
        return self.add_file(path, lambda staged: staged.write_text(text))

    def add_json(self, path: str | os.PathLike, data: Any) -> Path:
        """Stage ``data`` as indented JSON."""
        return self.add_text(path, json.dumps(data, indent=2) + "\n")

    def add_files(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        """Stage an output that may come with companion files (a model's external data):
        ``write(folder / name)`` writes the main file and its companions in ``folder``."""
        target = self._target(path)
        if is_stream(target):
            raise OnnxSnnError(f"{path}: a model with an external data file cannot be "
                               "written to a device or pipe")
        folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        entry = _Staged(Path(path), target, folder / target.name, folder)
        self._staged.append(entry)
        try:
            write(entry.staged)
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from None
        entry.companions = tuple(p for p in folder.iterdir() if p != entry.staged)
        for staged in (entry.staged, *entry.companions):
            os.chmod(staged, _default_mode())
        return Path(path)

    def add_folder(self, path: str | os.PathLike, fill: Callable[[Path], Collection[str]]
                   ) -> Path:
        """Stage a folder output: ``fill(staged_folder)`` writes its files and returns the
        names that it may write (an existing folder is replaced only if it holds nothing
        else)."""
        target = self._target(path, folder=True)
        staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        os.chmod(staged, _default_mode(0o777))  # mkdtemp creates 0700
        entry = _Staged(Path(path), target, staged, staged)
        self._staged.append(entry)
        try:
            owned = set(fill(staged))
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot write ({error.strerror or error})") from None
        if target.is_dir():
            foreign = sorted(p.name for p in target.iterdir() if p.name not in owned)
            if foreign:
                raise OnnxSnnError(f"{path}: the folder holds files this command does not "
                                   f"write ({', '.join(foreign[:3])}); choose a new or empty "
                                   "folder")
        return Path(path)

    # ------------------------------------------------------------------ commit

    def commit(self) -> None:
        """Move every staged output into place: streams first, then renames."""
        try:
            for entry in self._staged:
                if is_stream(entry.target):
                    with open(entry.target, "wb") as stream, open(entry.staged, "rb") as data:
                        shutil.copyfileobj(data, stream)
        except OSError as error:
            self.discard()
            raise OnnxSnnError(f"{entry.requested}: cannot write "
                               f"({error.strerror or error})") from None
        moved: list[tuple[Path, Path | None]] = []  # (target, what it replaced, set aside)
        try:
            for entry in self._staged:
                if is_stream(entry.target):
                    continue
                for staged in entry.companions:
                    moved.append(_move(staged, entry.target.parent / staged.name))
                moved.append(_move(entry.staged, entry.target))
        except OSError as error:
            for target, backup in reversed(moved):  # put back what was there
                _remove(target)
                if backup is not None:
                    os.rename(backup, target)
            self.discard()
            raise OnnxSnnError(f"{entry.requested}: cannot write "
                               f"({error.strerror or error})") from None
        for _, backup in moved:
            if backup is not None:
                _remove(backup)
        self.discard()

    def discard(self) -> None:
        """Remove whatever is still staged."""
        for entry in self._staged:
            _remove(entry.cleanup)
        if self._scratch is not None:
            _remove(self._scratch)
            self._scratch = None
        self._staged = []


def _move(staged: Path, target: Path) -> tuple[Path, Path | None]:
    """Rename ``staged`` to ``target``. What was there is kept aside (a hard link to a
    file, so the file never goes missing; a folder is renamed) and returned, so a
    failed commit can put it back."""
    backup = None
    if os.path.lexists(target):
        backup = target.parent / f".{target.name}.{os.getpid()}.{id(staged)}.old"
        try:
            if target.is_dir():
                raise OSError("a folder cannot be linked")
            os.link(target, backup)
        except OSError:
            os.rename(target, backup)
    try:
        os.replace(staged, target)
    except OSError:
        if backup is not None and not os.path.lexists(target):  # a folder set aside
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
