"""The ``onnx-snn`` command line: inspect, convert, eval, report, demo, doctor.

Errors are one line on stderr with exit status 1 (2 for bad usage); add
``--verbose`` for the traceback. The parser is in ``onnx_snn.cli.parser``, what
each command does in ``onnx_snn.cli.commands``.
"""

from __future__ import annotations

import argparse
import contextlib
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
    try:
        with _signals_interrupt(), warnings.catch_warnings(record=not args.verbose) as caught:
            _check_outputs(args)
            results = command.run(args)
            if args.json:
                args.outputs.add_json(args.json, results)
            args.outputs.commit()
        for warning in caught or []:
            print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    except KeyboardInterrupt as stop:
        args.outputs.discard()
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"{PROG}: interrupted ({signal.Signals(signum).name}); nothing was written",
              file=sys.stderr)
        return 128 + signum
    except Exception as error:  # every failure is one line unless --verbose
        args.outputs.discard()
        if args.verbose:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output is writable and overwrites no input (nor another output)."""
    from onnx_snn.io.models import model_files
    from onnx_snn.io.outputs import check_output_path

    inputs: list[Path] = []
    for name in ("model", "ann"):
        if getattr(args, name, None):
            inputs += model_files(getattr(args, name))
    inputs += [Path(getattr(args, name)) for name in ("calib", "data", "load_calibration")
               if getattr(args, name, None)]
    outputs = [(getattr(args, name), name == "out_dir")
               for name in ("output", "out_dir", "save_calibration", "json")
               if getattr(args, name, None)]
    for index, (output, folder) in enumerate(outputs):
        check_output_path(output, *inputs, *(o for o, _ in outputs[:index]), folder=folder)


def _one_line(error: Exception) -> str:
    """The error as one line; unexpected types are named, with a pointer to --verbose."""
    text = first_line(error)
    if isinstance(error, OnnxSnnError):
        return text
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    return f"unexpected {type(error).__name__}: {text} (rerun with --verbose for details)"
