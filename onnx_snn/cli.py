"""The ``onnx-snn`` command line: inspect, convert, eval, report, demo, doctor.

Errors are one line on stderr with exit status 1 (2 for bad usage); add
``--verbose`` for the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnx_snn import __version__
from onnx_snn.convert import PRESETS
from onnx_snn.errors import OnnxSnnError
from onnx_snn.formats import FORMATS
from onnx_snn.outputs import OutputSet
from onnx_snn.pooling import MAXPOOL_POLICIES

PROG = "onnx-snn"


def _mode(text: str) -> str | float:
    """``max``, ``P%`` or a number, as HookFactory takes it."""
    text = text.strip()
    if text.lower() == "max" or text.endswith("%"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid mode {text!r}: use max, a percentile such as 99.9%, or a number in (0, 1]"
        ) from None


def _v_reset(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return _float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"invalid reset {text!r}: use none or a finite "
                                         "number") from None


def _delay(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid readout delay {text!r}: use N >= 0 or auto") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"readout delay must be >= 0, got {value}")
    return value


#: The largest T the int64 input of a converted model can hold.
MAX_TIMESTEPS = 2**63 - 1


def _timesteps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time steps {text!r}: use e.g. 4,8,16") \
            from None
    if not steps or min(steps) <= 0:
        raise argparse.ArgumentTypeError(f"time steps must be positive integers, got {text!r}")
    if max(steps) > MAX_TIMESTEPS:
        raise argparse.ArgumentTypeError(f"time steps {max(steps)} exceed the int64 range "
                                         f"(at most {MAX_TIMESTEPS})")
    return steps


def _positive_int(what: str):
    """An argument type: an int >= 1, with errors that say ``what`` it is."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: use a positive "
                                             "integer") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {value}")
        return value
    return parse


def _float(text: str) -> float:
    """A finite number (NaN and infinities are refused here, not later)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``onnx-snn: error: ...``) with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Convert ONNX ReLU networks into spiking networks that run "
                               "in onnxruntime.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    common.add_argument("--json", metavar="FILE", help="also write machine-readable results")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    graph_options = _Parser(add_help=False)
    graph_options.add_argument("--exclude", action="append", default=[], metavar="NODE",
                               help="keep this Relu analog (repeatable)")
    graph_options.add_argument("--keep-analog", action="store_true",
                               help="keep unconvertible activations (Sigmoid, Tanh, ...) analog")
    graph_options.add_argument("--maxpool", choices=MAXPOOL_POLICIES, default=None,
                               help="MaxPool policy: keep (warns after neurons), before (max "
                                    "of potentials, exact), avg (AveragePool); default keep, "
                                    "or before with --preset best")
    graph_options.add_argument("--drop-softmax", action="store_true",
                               help="remove a Softmax at the output (outputs carry the logits)")

    inspect = commands.add_parser(
        "inspect", parents=[common, graph_options],
        help="show what a conversion would do, without running it",
        description="List every activation that will be converted, kept or refused, the "
                    "layers with a caveat, and the input and output shapes.")
    inspect.add_argument("model", metavar="MODEL.onnx", help="the ANN to inspect")
    inspect.set_defaults(run=_run_inspect)

    convert = commands.add_parser(
        "convert", parents=[common, graph_options],
        help="calibrate an ANN and convert it into an SNN",
        description="Calibrate ANN.onnx on DATA and write the spiking model.")
    convert.add_argument("model", metavar="ANN.onnx", help="the ANN to convert")
    convert.add_argument("--calib", metavar="DATA.npz",
                         help="calibration data: array 'x' or one array per input name")
    convert.add_argument("-o", "--output", metavar="SNN.onnx", required=True,
                         help="where to write the spiking model")
    convert.add_argument("--batch-size", type=_positive_int("batch size"), default=100,
                         metavar="N",
                         help="calibration batch size (default 100)")
    convert.add_argument("--preset", choices=sorted(PRESETS),
                         help="spikingjelly: the classic per-layer conversion; best: threshold "
                              "balancing + half-threshold start + MaxPool before the neuron "
                              "(explicit options below override the preset)")
    convert.add_argument("--mode", type=_mode, default=None, metavar="max|P%|FRACTION",
                         help="scale statistic: max, P%% (e.g. 99.9%%) or a fraction of the "
                              "max in (0, 1] (default max)")
    convert.add_argument("--momentum", type=_float, default=None, metavar="M",
                         help="moving-average momentum across batches, in [0, 1] (default 0.1)")
    convert.add_argument("--per-channel", action="store_true", default=None,
                         help="one scale per channel instead of per layer")
    convert.add_argument("--threshold-balancing", action="store_true", default=None,
                         help="local threshold balancing per channel (Bu et al., CVPR 2025)")
    convert.add_argument("--v-threshold", type=_float, default=None, metavar="THETA",
                         help="neuron threshold (default 1.0)")
    convert.add_argument("--v-reset", type=_v_reset, default=None, metavar="none|FLOAT",
                         help="reset potential; none means soft reset (default none)")
    convert.add_argument("--v-init", type=_float, default=None, metavar="FRACTION",
                         help="initial potential as a fraction of the threshold; 0.5 helps "
                              "at small T (default 0, or 0.5 with --preset best)")
    convert.add_argument("--bias-calibration", type=_positive_int("bias calibration steps"),
                         default=None, metavar="T",
                         help="light bias calibration at T steps (Li et al., ICML 2021)")
    convert.add_argument("--spike-counts", action="store_true",
                         help="add an output <layer>__spike_count [N] per neuron layer")
    convert.add_argument("--save-calibration", metavar="FILE",
                         help="write the calibrated scales as JSON")
    convert.add_argument("--load-calibration", metavar="FILE",
                         help="use scales from a saved calibration instead of --calib")
    convert.add_argument("--format", choices=FORMATS, default="onnx-snn",
                         help="onnx-snn: IFNode ops with their function; standard: ai.onnx ops "
                              "only; streaming: one time step per run, membrane state as "
                              "inputs/outputs (default onnx-snn)")
    convert.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    convert.set_defaults(run=_run_convert, settings=_conversion_settings)

    evaluate = commands.add_parser(
        "eval", parents=[common], help="accuracy of an SNN at several T (and of the ANN)",
        description="Evaluate SNN.onnx on labelled data at every T from one run.")
    evaluate.add_argument("model", metavar="SNN.onnx", help="a converted model")
    evaluate.add_argument("--data", metavar="TEST.npz", required=True,
                          help="test data: array 'x' (or one array per input name) and "
                               "integer labels 'y'")
    evaluate.add_argument("--output", metavar="NAME", dest="scored_output",
                          help="the output to score (default: the first with class scores "
                               "[N, classes], else the first integer label output)")
    evaluate.add_argument("--timesteps", type=_timesteps, default=[4, 8, 16, 32, 64],
                          metavar="T[,T...]",
                          help="comma-separated T values (default 4,8,16,32,64)")
    evaluate.add_argument("--ann", metavar="ANN.onnx", help="also evaluate the original ANN")
    evaluate.add_argument("--batch-size", type=_positive_int("batch size"), default=256,
                          metavar="N",
                          help="samples per run (default 256)")
    evaluate.add_argument("--readout-delay", type=_delay, default=0, metavar="N|auto",
                          help="ignore the outputs of the first N steps; auto estimates N "
                               "per T from --calib data against --ann (default 0)")
    evaluate.add_argument("--calib", metavar="DATA.npz",
                          help="calibration data for --readout-delay auto (as --data, labels "
                               "not needed)")
    evaluate.set_defaults(run=_run_eval, settings=_eval_settings)

    report = commands.add_parser(
        "report", parents=[common], help="accuracy over time, firing rates, SOPs, energy, plots",
        description="Run SNN.onnx on labelled data and write report.json, PNG plots and "
                    "report.md to OUTDIR.")
    report.add_argument("model", metavar="SNN.onnx", help="a converted model")
    report.add_argument("--data", metavar="TEST.npz", required=True,
                        help="array 'x' (or one array per input name) and integer labels 'y'")
    report.add_argument("--output", metavar="NAME", dest="scored_output",
                        help="the output to score (default as for eval)")
    report.add_argument("--ann", metavar="ANN.onnx",
                        help="the original ANN: its accuracy and the rate comparison")
    report.add_argument("--timesteps", type=_timesteps, default=[64], metavar="T",
                        help="time steps (default 64)")
    report.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                        help="energy per operation (default fp32)")
    report.add_argument("--batch-size", type=_positive_int("batch size"), default=128,
                        metavar="N",
                        help="samples per run (default 128)")
    report.add_argument("-o", "--out-dir", metavar="OUTDIR", required=True,
                        help="folder for report.json, the plots and report.md (written "
                             "all at once; an existing folder is replaced only if it holds "
                             "nothing but such files)")
    report.set_defaults(run=_run_report, settings=_report_settings)

    demo = commands.add_parser(
        "demo", parents=[common], help="train, convert and evaluate a digits CNN",
        description="The built-in demo on scikit-learn's digits data.")
    demo.add_argument("--out", metavar="DIR", help="write the ANN, SNN and data here")
    demo.set_defaults(run=_run_demo)

    doctor = commands.add_parser(
        "doctor", parents=[common], help="say which IFNode backend runs, and why",
        description="Report whether the native IFNode kernels load (else the ONNX "
                    "function body runs), with the library path for other bindings.")
    doctor.set_defaults(run=_run_doctor)
    return parser


def _run_inspect(args: argparse.Namespace) -> dict:
    from onnx_snn.inspection import inspect_model

    report = inspect_model(args.model, exclude=args.exclude, keep_analog=args.keep_analog,
                           maxpool=args.maxpool or "keep",
                           drop_output_softmax=args.drop_softmax)
    data = report.to_dict()

    def shapes(values: list[dict]) -> str:
        return ", ".join(f"{v['name']} {v['dtype']} {v['shape']}" for v in values)

    print(f"{args.model} (ai.onnx opset {report.opset})")
    print(f"  ANN inputs:  {shapes(data['inputs'])}")
    print(f"  ANN outputs: {shapes(data['outputs'])}")
    print(f"  SNN inputs:  {shapes(data['spiking_inputs'])}")
    print(f"  SNN outputs: {shapes(data['spiking_outputs'])}")
    print("activations:")
    for entry in report.activations:
        print(f"  {entry.action:<8} {entry.op:<12} {entry.node}"
              + (f"  ({entry.note})" if entry.note else ""))
    if report.caveats:
        print("caveats:")
        for entry in report.caveats:
            print(f"  {entry.op:<12} {entry.node}  {entry.note}")
    converted = [e for e in report.activations if e.action == "convert"]
    print(f"{len(converted)} to convert, "
          f"{sum(e.action == 'refuse' for e in report.activations)} refused")
    if report.blocker:  # the listing is still the answer: write it, then fail
        if args.json:
            args.outputs.add_json(args.json, data)
            args.outputs.commit()
        raise OnnxSnnError(f"convert would stop: {report.blocker}")
    return data


def _hook_factory(args: argparse.Namespace):
    """The hook factory the options ask for, or None to use the preset's."""
    from onnx_snn.calibration import BalancingHookFactory, HookFactory

    if args.threshold_balancing:
        if args.mode is not None or args.momentum is not None:
            raise OnnxSnnError("--threshold-balancing sets its own thresholds: drop --mode "
                               "and --momentum")
        return BalancingHookFactory()
    if args.mode is None and args.momentum is None and args.per_channel is None:
        return None
    return HookFactory("max" if args.mode is None else args.mode,
                       0.1 if args.momentum is None else args.momentum,
                       per_channel=bool(args.per_channel))


def _neuron_factory(args: argparse.Namespace):
    """The neuron factory the options ask for, or None to use the preset's."""
    from onnx_snn.neurons import NeuronFactory

    if args.v_threshold is None and args.v_reset is None and args.v_init is None:
        return None
    v_init = args.v_init if args.v_init is not None else \
        (0.5 if args.preset == "best" else 0.0)
    return NeuronFactory(v_threshold=1.0 if args.v_threshold is None else args.v_threshold,
                         v_reset=args.v_reset, v_init=v_init)


def _conversion_settings(args: argparse.Namespace) -> None:
    """The factories the options ask for (None: the preset's), checked before any work."""
    args.hook_factory = _hook_factory(args)
    args.neuron_factory = _neuron_factory(args)


def _run_convert(args: argparse.Namespace) -> dict:
    from onnx_snn.calibration import Calibration
    from onnx_snn.convert import convert

    if args.calib is None and args.load_calibration is None:
        raise OnnxSnnError("give calibration data with --calib or scales with --load-calibration")
    calibration = Calibration.load(args.load_calibration) if args.load_calibration else None
    result = convert(args.model, args.calib, preset=args.preset,
                     hook_factory=args.hook_factory, neuron_factory=args.neuron_factory,
                     batch_size=args.batch_size, exclude=args.exclude,
                     keep_analog=args.keep_analog, maxpool=args.maxpool,
                     drop_output_softmax=args.drop_softmax,
                     bias_calibration=args.bias_calibration,
                     spike_counts=args.spike_counts, calibration=calibration,
                     progress=not args.no_progress, format=args.format)
    result.save(args.output, outputs=args.outputs)
    if args.save_calibration:
        args.outputs.add_json(args.save_calibration, result.calibration.to_dict())
    report = result.report()
    print(f"converted {len(result.layers)} Relu into spiking neurons -> {args.output} "
          f"({args.format} format)")
    for layer in report["layers"]:
        scale = np.asarray(layer["scale"])
        described = f"{float(scale):.6g}" if scale.ndim == 0 else \
            f"{scale.size} channels, {scale.min():.4g}..{scale.max():.4g}"
        print(f"  {layer['node']:<40} scale {described}")
    return report


def _eval_settings(args: argparse.Namespace) -> None:
    from onnx_snn.evaluation import check_delay_below

    if args.readout_delay != "auto":
        check_delay_below(args.readout_delay, args.timesteps)


def _report_settings(args: argparse.Namespace) -> None:
    if len(args.timesteps) != 1:
        raise OnnxSnnError("report takes one T, e.g. --timesteps 64")


def _run_eval(args: argparse.Namespace) -> dict:
    from onnx_snn.evaluation import ann_accuracy, snn_accuracy
    from onnx_snn.readout import choose_output
    from onnx_snn.streaming import open_session

    session = open_session(args.model)
    scored = choose_output(session.output_types, args.scored_output)
    ann = ann_accuracy(args.ann, args.data, batch_size=args.batch_size, output=scored.name) \
        if args.ann else None
    delays = _readout_delays(args, session, scored.name)
    snn = {}
    for delay in sorted(set(delays.values())):  # one run per distinct delay
        steps = [t for t in args.timesteps if delays[t] == delay]
        snn.update(snn_accuracy(session, args.data, None, steps, args.batch_size,
                                readout_delay=delay, output=scored.name))
    if ann is not None:
        print(f"ANN accuracy: {ann:.4f}")
    print(f"scored output: {scored.name}")
    print(f"{'T':>5}  {'delay':>5}  SNN accuracy")
    for t in sorted(snn):
        print(f"{t:>5}  {delays[t]:>5}  {snn[t]:.4f}")
    return {"ann_accuracy": ann, "output": scored.name,
            "snn_accuracy": {str(t): snn[t] for t in sorted(snn)},
            "readout_delay": {str(t): delays[t] for t in sorted(snn)}}


def _readout_delays(args: argparse.Namespace, session, output: str) -> dict[int, int]:
    """The readout delay for each T: fixed, or estimated on calibration data."""
    if args.readout_delay != "auto":
        return {t: args.readout_delay for t in args.timesteps}
    if not args.calib or not args.ann:
        raise OnnxSnnError("--readout-delay auto needs --calib DATA.npz and --ann ANN.onnx")
    from onnx_snn.readout import estimate_readout_delay

    return {t: estimate_readout_delay(session, args.calib, t, ann=args.ann,
                                      batch_size=args.batch_size, output=output)
            for t in args.timesteps}


def _run_report(args: argparse.Namespace) -> dict:
    from onnx_snn.report import make_report

    result = make_report(args.model, args.data, ann=args.ann, timesteps=args.timesteps[0],
                         precision=args.precision, batch_size=args.batch_size,
                         output=args.scored_output)
    written = result.write(args.out_dir, outputs=args.outputs)
    print(f"wrote {', '.join(written)} to {args.out_dir}")
    curve = result.accuracy_curve
    if result.ann_accuracy is not None:
        print(f"ANN accuracy: {result.ann_accuracy:.4f}")
    ratio = result.totals["sop_mac_ratio"]
    energy = result.totals["energy_ratio"]
    print(f"SNN accuracy at T = {result.timesteps}: {curve[-1]:.4f} (output "
          f"'{result.output}'); SOP/MAC ratio "
          f"{'n/a' if ratio is None else f'{ratio:.3f}'}; energy ratio "
          f"{'n/a' if energy is None else f'{energy:.3f}'}")
    return result.to_dict()


def _run_demo(args: argparse.Namespace) -> dict:
    from onnx_snn.demo import run_demo

    return run_demo(args.out, outputs=args.outputs)


def _run_doctor(args: argparse.Namespace) -> dict:
    from onnx_snn.ops.native import native_report

    report = native_report()
    print(f"IFNode backend: {report['backend']}")
    print(f"  library:     {report['library'] or 'none found'}")
    print(f"  why:         {report['reason']}")
    print(f"  onnxruntime {report['onnxruntime']}, onnx-snn {report['onnx_snn']}")
    return report


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
    them (``onnx_snn.outputs``), also when it is interrupted. Warnings are
    shown once the command has succeeded (``onnx-snn: warning: ...``); a failed
    command prints its one error line only. ``--verbose`` shows both as they come.
    """
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        if hasattr(args, "settings"):
            args.settings(args)
    except OnnxSnnError as error:  # a bad option value is bad usage: status 2
        print(f"{PROG}: error: {error} (see {PROG} {args.command} --help)", file=sys.stderr)
        return 2
    args.outputs = OutputSet()
    try:
        with _signals_interrupt(), warnings.catch_warnings(record=not args.verbose) as caught:
            _check_outputs(args)
            results = args.run(args)
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
    from onnx_snn.modelio import model_files
    from onnx_snn.outputs import check_output_path

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
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(error, OnnxSnnError):
        return text
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror}"
    return f"unexpected {type(error).__name__}: {text} (rerun with --verbose for details)"


if __name__ == "__main__":
    sys.exit(main())
