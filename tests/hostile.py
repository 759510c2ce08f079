"""Shared checks for the hostile-input tests (``test_bad_inputs.py``, ``test_hostile.py``).

A failed command must leave ONE line ``onnx-snn: error: ...`` on stderr that names
what is wrong, exit with a non-zero status (2 for bad usage) without dying by a
signal or printing a traceback, and change no file: ``snapshot`` records every
file and folder under the watched roots (sha256 of regular files, the type of
special files: pipes, sockets, devices, links) so that ``assert_untouched`` sees
any file created, changed, replaced or removed.

Reading stderr: a progress bar redraws itself with carriage returns and clears
itself, so stderr is rendered the way a terminal shows it (the text after the
last "\\r" of each line) before the lines are counted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_snn.cli import main

PREFIX = "onnx-snn: error:"
#: A substring, or a regular expression, that the error line must contain.
Needle = str | re.Pattern


def rendered_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines as a terminal shows them (a "\\r" returns to column 0)."""
    lines = (line.rsplit("\r", 1)[-1].strip() for line in stderr.split("\n"))
    return [line for line in lines if line]


def _describe(path: Path) -> str:
    """A regular file's sha256, a link's target, or the kind of a special file."""
    if path.is_symlink():
        return f"-> {os.readlink(path)}"
    mode = os.stat(path).st_mode
    for test, kind in [(stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")]:
        if test(mode):
            return kind
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder (hidden ones included) under ``roots``: path -> sha256 of a
    file, the target of a link, the kind of a special file, or "folder". A root that is
    itself a file (``/dev/null``) is recorded as such."""
    state = {}
    for root in roots:
        if not root.is_dir() or root.is_symlink():
            state[str(root)] = _describe(root) if os.path.lexists(root) else "absent"
            continue
        for folder, folders, names in os.walk(root):
            state.update({str(Path(folder, name)): "folder" for name in folders})
            for name in names:
                state[str(Path(folder, name))] = _describe(Path(folder, name))
    return state


def assert_untouched(before: dict[str, str], after: dict[str, str]) -> None:
    """No file appeared (output, .tmp, .data), none changed, none vanished."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not (added or removed or changed), \
        f"files changed by a failed command: added {added}, removed {removed}, changed {changed}"


def assert_one_line_error(stderr: str, needles: list[Needle]) -> str:
    """stderr is one line ``onnx-snn: error: ...`` holding every needle; return that line."""
    assert "Traceback" not in stderr, stderr
    lines = rendered_lines(stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    line = lines[0]
    assert line.startswith(PREFIX), line
    for needle in needles:
        if isinstance(needle, re.Pattern):
            assert needle.search(line), f"{needle.pattern!r} not in {line!r}"
        else:
            assert needle in line, f"{needle!r} not in {line!r}"
    return line


def run_main(argv: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (status, stdout, stderr); argparse exits become statuses."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    except Exception as error:  # noqa: BLE001 - the console script would print a traceback
        pytest.fail(f"main() raised {type(error).__name__}: {error} (the onnx-snn script "
                    "would print a traceback)")
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expect_error(argv: list, capsys: pytest.CaptureFixture, watch: list[Path],
                 needles: list[Needle], status: int | None = None) -> str:
    """Run the CLI on a bad input; check the status (``status``, or any non-zero), the
    one error line, and the files."""
    before = snapshot(*watch)
    got, _, err = run_main(argv, capsys)
    assert got != 0, f"exit status 0 for a bad input; stderr: {err!r}"
    if status is not None:
        assert got == status, f"exit status {got}, expected {status}; stderr: {err!r}"
    line = assert_one_line_error(err, needles)
    assert_untouched(before, snapshot(*watch))
    return line


def run_script(argv: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real console script; falls back to ``python -m onnx_snn.cli`` if not on PATH."""
    script = shutil.which("onnx-snn")
    command = [script] if script else [sys.executable, "-m", "onnx_snn.cli"]
    done = subprocess.run([*command, *map(str, argv)], capture_output=True, cwd=cwd,
                          timeout=timeout, check=False)
    # decoded by hand: text=True would turn the progress bar's "\r" into line breaks
    return subprocess.CompletedProcess(done.args, done.returncode,
                                       done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))
