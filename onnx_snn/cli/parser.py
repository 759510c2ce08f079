"""The ``onnx-snn`` command line's parser: its commands, options and argument types.

Usage errors are one line (``onnx-snn: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import math

from onnx_snn.config import PRESET_NAMES
from onnx_snn.export.formats import FORMATS
from onnx_snn.graph.pooling import MAXPOOL_POLICIES
from onnx_snn.version import __version__

PROG = "onnx-snn"
#: Tells an option left out from one given as its default (``--v-reset none``).
UNSET = object()


def _mode(text: str) -> str | float:
    """``max``, ``P%`` or a number, as HookFactory takes it."""
    text = text.strip()
    if text.lower() == "max" or text.endswith("%"):
        return text
    try:
        return float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"invalid mode {text!r}: use max, a percentile such as 99.9%, or a number in (0, 1]"
        ) from error


def _v_reset(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return _float(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"invalid reset {text!r}: use none or a finite "
                                         "number") from error


def _delay(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid readout delay {text!r}: use N >= 0 or auto") \
            from error
    if value < 0:
        raise argparse.ArgumentTypeError(f"readout delay must be >= 0, got {value}")
    return value


#: The largest T the int64 input of a converted model can hold.
MAX_TIMESTEPS = 2**63 - 1


def _timesteps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid time steps {text!r}: use e.g. 4,8,16") \
            from error
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
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: use a positive "
                                             "integer") from error
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {value}")
        return value
    return parse


def _float(text: str) -> float:
    """A finite number (NaN and infinities are refused here, not later)."""
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from error
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
    common.add_argument("--memory-limit", metavar="SIZE",
                        help="memory a run may plan for, e.g. 2GB or 512MiB; longer runs go "
                             "in chunks of steps (default: half of what the machine, cgroup "
                             "and process limits leave)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    scale_out = _Parser(add_help=False)
    cluster = scale_out.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=_positive_int("workers"), metavar="N",
                         help="shard the batches over N Ray workers started here, one "
                              "onnxruntime thread each (same results; needs onnx-snn[ray])")
    cluster.add_argument("--ray-address", metavar="ADDR",
                         help="shard the batches over the Ray cluster at ADDR (one worker per "
                              "CPU)")

    graph_options = _Parser(add_help=False)
    graph_options.add_argument("--exclude", action="append", default=[], metavar="NODE",
                               help="keep this Relu analog (repeatable)")
    graph_options.add_argument("--keep-analog", action="store_true",
                               help="keep unconvertible activations (Sigmoid, Tanh, ...) analog")
    graph_options.add_argument("--maxpool", choices=MAXPOOL_POLICIES, default=None,
                               help="MaxPool policy: keep (warns after neurons), before (max "
                                    "of potentials, exact), avg (AveragePool), td (difference "
                                    "of the max of running sums: exact on rates), gated (the "
                                    "input of the highest running rate); default keep, "
                                    "or td with --preset best")
    graph_options.add_argument("--drop-softmax", action="store_true",
                               help="remove a Softmax at the output (outputs carry the logits)")

    inspect = commands.add_parser(
        "inspect", parents=[common, graph_options],
        help="show what a conversion would do, without running it",
        description="List every activation that will be converted, kept or refused, the "
                    "layers with a caveat, and the input and output shapes.")
    inspect.add_argument("model", metavar="MODEL.onnx", help="the ANN to inspect")

    convert = commands.add_parser(
        "convert", parents=[common, graph_options, scale_out],
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
    convert.add_argument("--preset", choices=sorted(PRESET_NAMES),
                         help="spikingjelly: the classic per-layer conversion; best: threshold "
                              "balancing for 16 levels + half-threshold start + TD MaxPool; "
                              "auto: tries the methods on the calibration data and keeps the "
                              "one closest to the ANN at --target-timesteps (explicit options "
                              "below override the preset)")
    convert.add_argument("--target-timesteps", type=_positive_int("target timesteps"),
                         default=None, metavar="T",
                         help="the T to aim at: --preset auto searches the methods for it, "
                              "--threshold-balancing balances for it (default 16)")
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
    convert.add_argument("--v-reset", type=_v_reset, default=UNSET, metavar="none|FLOAT",
                         help="reset potential; none means soft reset (default none)")
    convert.add_argument("--v-init", type=_float, default=None, metavar="FRACTION",
                         help="initial potential as a fraction of the threshold; 0.5 helps "
                              "at small T (default 0, or 0.5 with --preset best)")
    convert.add_argument("--max-spikes", type=_positive_int("max spikes"), default=None,
                         metavar="B",
                         help="burst neurons: up to B spikes a step, so T steps resolve B*T "
                              "levels (default 1)")
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
                              "inputs/outputs; chunked: any steps per run, every state as "
                              "inputs/outputs (default onnx-snn)")
    convert.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    evaluate = commands.add_parser(
        "eval", parents=[common, scale_out],
        help="accuracy of an SNN at several T (and of the ANN)",
        description="Evaluate SNN.onnx on labelled data at every T from one run. With "
                    "--ann and no labels or no class-score output, compare every output "
                    "with the ANN's at every T instead (relative error, correlation, "
                    "argmax agreement).")
    evaluate.add_argument("model", metavar="SNN.onnx", help="a converted model")
    evaluate.add_argument("--data", metavar="TEST.npz", required=True,
                          help="test data: array 'x' (or one array per input name) and "
                               "labels 'y' (class indices [N] or one-hot [N, classes]; "
                               "optional with --ann)")
    evaluate.add_argument("--output", metavar="NAME", dest="scored_output",
                          help="the output to score (default: the first with class scores "
                               "[N, classes] or [N, classes, 1, 1], else the first integer "
                               "label output)")
    evaluate.add_argument("--timesteps", type=_timesteps, default=[4, 8, 16, 32, 64],
                          metavar="T[,T...]",
                          help="comma-separated T values (default 4,8,16,32,64)")
    evaluate.add_argument("--ann", metavar="ANN.onnx", help="also evaluate the original ANN")
    evaluate.add_argument("--fidelity", action="store_true",
                          help="also compare every output with the --ann ANN's at each T "
                               "(done anyway when nothing can be scored)")
    evaluate.add_argument("--batch-size", type=_positive_int("batch size"), default=256,
                          metavar="N",
                          help="samples per run (default 256)")
    evaluate.add_argument("--readout-delay", type=_delay, default=0, metavar="N|auto",
                          help="ignore the outputs of the first N steps; auto estimates N "
                               "per T from --calib data against --ann (default 0)")
    evaluate.add_argument("--calib", metavar="DATA.npz",
                          help="calibration data for --readout-delay auto (as --data, labels "
                               "not needed)")

    report = commands.add_parser(
        "report", parents=[common, scale_out],
        help="accuracy over time, firing rates, SOPs, energy, plots",
        description="Run SNN.onnx on labelled data and write report.json, PNG plots and "
                    "report.md to OUTDIR. With --ann, every output is also compared with "
                    "the ANN's (labels then optional).")
    report.add_argument("model", metavar="SNN.onnx", help="a converted model")
    report.add_argument("--data", metavar="TEST.npz", required=True,
                        help="array 'x' (or one array per input name) and labels 'y' "
                             "(class indices or one-hot; optional with --ann)")
    report.add_argument("--output", metavar="NAME", dest="scored_output",
                        help="the output to score (default as for eval)")
    report.add_argument("--ann", metavar="ANN.onnx",
                        help="the original ANN: its accuracy, the rate comparison and each "
                             "output against the ANN's")
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

    demo = commands.add_parser(
        "demo", parents=[common], help="train, convert and evaluate a digits CNN",
        description="The built-in demo on scikit-learn's digits data.")
    demo.add_argument("--out", metavar="DIR", help="write the ANN, SNN and data here")

    commands.add_parser(
        "doctor", parents=[common], help="say which IFNode backend runs, and why",
        description="Report whether the native IFNode kernels load (else the ONNX "
                    "function body runs), with the library path for other bindings.")
    return parser
