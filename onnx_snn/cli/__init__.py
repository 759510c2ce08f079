"""The ``onnx-snn`` command line: inspect, convert, eval, report, demo, doctor.

Errors are one line on stderr with exit status 1 (2 for bad usage); add
``--verbose`` for the traceback. The parser is in ``onnx_snn.cli.parser``, what
each command does in ``onnx_snn.cli.commands``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from onnx_snn.cli.commands import COMMANDS
from onnx_snn.cli.parser import PROG, build_parser
from onnx_snn.errors import OnnxSnnError, first_line
from onnx_snn.io.outputs import OutputSet
from onnx_snn.runtime.memory import set_memory_limit

__all__ = ["build_parser", "main"]


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that the same clean-up runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt():
    """While the command runs, SIGTERM and SIGHUP interrupt it as SIGINT does."""
    def interrupt(signum, frame):
        raise Interrupted(signum)

    catchable = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                 if s is not None]
    try:
        previous = {s: signal.signal(s, interrupt) for s in catchable}
    except ValueError:  # not the main thread: leave the signals alone
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _HeldStdout(io.TextIOBase):
    """stdout while a command runs. What is printed once an output is staged waits for
    the commit (``release``), so a summary that says "wrote" is true and a closed pipe
    (``| head``) cannot stop the outputs; a closed pipe drops the rest of the text."""

    def __init__(self, stream, outputs: OutputSet) -> None:
        super().__init__()
        self.stream, self.outputs = stream, outputs
        self.held: list[str] = []
        self.broken = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if self.outputs.pending:
            self.held.append(text)
        else:
            self._emit(text)
        return len(text)

    def flush(self) -> None:
        self._emit("")

    def release(self) -> None:
        """Print what was held, now that the outputs are in place."""
        text, self.held = "".join(self.held), []
        self._emit(text)

    def _emit(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True


def _silence_stdout() -> None:
    """stdout's reader is gone: send what is left to /dev/null, so that the
    interpreter's last flush fails silently instead of printing a traceback."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _quiet_libraries() -> None:
    """onnxruntime and onnx-graphsurgeon log to stderr and stdout; onnx_snn reports
    their problems itself, in one line."""
    import onnxruntime
    from onnx_graphsurgeon.logger import G_LOGGER

    onnxruntime.set_default_logger_severity(4)
    G_LOGGER.severity = G_LOGGER.ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onnx-snn`` console script; returns the exit status.

    All of a command's outputs are committed together at the end, or none of
    them (``onnx_snn.io.outputs``), also when it is interrupted. Warnings are
    shown once the command has succeeded (``onnx-snn: warning: ...``); a failed
    command prints its one error line only. ``--verbose`` shows both as they come.
    """
    args = build_parser().parse_args(argv)
    try:
        return _run_command(args)
    finally:  # the limit is this command's, not the calling process's
        set_memory_limit(None)


def _run_command(args: argparse.Namespace) -> int:
    """``main`` after parsing: settings, the command, its outputs; the exit status."""
    command = COMMANDS[args.command]
    _quiet_libraries()
    try:
        set_memory_limit(args.memory_limit, announce=args.verbose)
        if command.settings is not None:
            command.settings(args)
    except OnnxSnnError as error:  # a bad option value is bad usage: status 2
        print(f"{PROG}: error: {error} (see {PROG} {args.command} --help)", file=sys.stderr)
        return 2
    args.outputs = OutputSet()
    held = _HeldStdout(sys.stdout, args.outputs)
    try:
        with _signals_interrupt(), contextlib.redirect_stdout(held), \
                warnings.catch_warnings(record=not args.verbose) as caught:
            _check_outputs(args)
            results = command.run(args)
            if args.json is not None:
                args.outputs.add_json(args.json, results)
            args.outputs.commit()
        held.release()  # the summary, once the files it names are in place
        for warning in caught or []:
            print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    except KeyboardInterrupt as stop:
        args.outputs.discard()
        signum = getattr(stop, "signum", signal.SIGINT)
        written = ", ".join(map(str, args.outputs.written))
        print(f"{PROG}: interrupted ({signal.Signals(signum).name})"
              + (f" after the outputs were written: {written}" if written
                 else "; nothing was written"), file=sys.stderr)
        return 128 + signum
    except Exception as error:  # every failure is one line unless --verbose
        args.outputs.discard()
        if args.verbose:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:
        if held.broken:
            _silence_stdout()
    return 128 + signal.SIGPIPE if held.broken else 0  # as a shell reports `cmd | head`


#: The options that name outputs: (attribute, option, is a folder replaced whole).
OUTPUT_OPTIONS = [("output", "-o", False), ("out_dir", "-o", True),
                  ("save_calibration", "--save-calibration", False), ("json", "--json", False),
                  ("out", "--out", None)]


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output is named, writable, overwrites no input, and is
    apart from the others (not the same path, not inside an output folder)."""
    from onnx_snn.io.destinations import check_apart, check_output_path
    from onnx_snn.io.models import model_files

    inputs: list[Path] = []
    for name in ("model", "ann"):
        if getattr(args, name, None):
            inputs += model_files(getattr(args, name))
    inputs += [Path(getattr(args, name)) for name in ("calib", "data", "load_calibration")
               if getattr(args, name, None)]
    given = [(getattr(args, name), option, folder) for name, option, folder in OUTPUT_OPTIONS
             if getattr(args, name, None) is not None]
    for value, option, _ in given:
        if not value:
            raise OnnxSnnError(f"{option} {value!r}: the output path is empty; expected a "
                               "file name")
    files = [(value, folder) for value, _, folder in given if folder is not None]
    check_apart(files)
    for value, folder in files:
        check_output_path(value, *inputs, folder=folder)


def _one_line(error: Exception) -> str:
    """The error as one line; unexpected types are named, with a pointer to --verbose."""
    text = first_line(error)
    if isinstance(error, OnnxSnnError):
        return text
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    return f"unexpected {type(error).__name__}: {text} (rerun with --verbose for details)"
