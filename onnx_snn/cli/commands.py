"""What each ``onnx-snn`` command does, given its parsed arguments.

``COMMANDS`` maps each command to its ``run`` (returns the results that ``--json``
writes) and an optional ``settings`` step that checks option values before any
work (a bad value is bad usage, status 2). Every file a command writes is staged
in ``args.outputs`` and committed by ``onnx_snn.cli.main``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np

from onnx_snn.errors import OnnxSnnError


@dataclass(frozen=True)
class Command:
    run: Callable[[argparse.Namespace], dict]
    settings: Callable[[argparse.Namespace], None] | None = None


def run_inspect(args: argparse.Namespace) -> dict:
    from onnx_snn.graph.inspection import inspect_model

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
    print("ops:")
    for entry in report.ops:
        print(f"  {entry.action:<8} {entry.op:<12} {entry.node}"
              + (f"  ({entry.note})" if entry.note else ""))
    if report.caveats:
        print("caveats:")
        for entry in report.caveats:
            print(f"  {entry.op:<12} {entry.node}  {entry.note}")
    print(", ".join(f"{sum(e.action == action for e in report.ops)} {label}" for action, label in
                    (("neuron", "neurons"), ("signed", "signed neurons"),
                     ("td", "time-difference ops"), ("per-step", "per-step analog ops"))))
    if report.blocker:  # the listing is still the answer: write it, then fail
        if args.json:
            args.outputs.add_json(args.json, data)
            args.outputs.commit()
        raise OnnxSnnError(f"convert would stop: {report.blocker}")
    return data


def conversion_settings(args: argparse.Namespace) -> None:
    """``args.settings``: the conversion settings the options give, checked now against
    the preset (a hook or neuron option replaces the preset's factory settings only).
    ``--target-timesteps`` is the T that ``--preset auto`` searches for, or that
    ``--threshold-balancing`` balances for."""
    from onnx_snn.calibration.factories import (
        BALANCED_TIMESTEPS,
        BalancingHookFactory,
        HookFactory,
    )
    from onnx_snn.cli.parser import UNSET
    from onnx_snn.config import AUTO, PRESETS, resolve_config
    from onnx_snn.snn.neurons import NeuronFactory

    auto = args.preset == AUTO
    hook = {name: value for name, value in [("mode", args.mode), ("momentum", args.momentum),
                                             ("per_channel", args.per_channel)]
            if value is not None}
    if args.threshold_balancing and hook:
        raise OnnxSnnError("--threshold-balancing sets its own thresholds: drop --mode "
                           "and --momentum")
    if args.target_timesteps is not None and not (auto or args.threshold_balancing):
        raise OnnxSnnError("--target-timesteps is the T that --preset auto or "
                           "--threshold-balancing aims at: add one of them")
    neuron = {name: value for name, value in [("v_threshold", args.v_threshold),
                                               ("v_init", args.v_init),
                                               ("max_spikes", args.max_spikes)]
              if value is not None}
    if args.v_reset is not UNSET:
        neuron["v_reset"] = args.v_reset
    # auto's own candidates start half-way to the threshold; so do given neurons there
    neurons = NeuronFactory(v_init=0.5) if auto else PRESETS[args.preset or
                                                              "spikingjelly"].neuron_factory
    neurons = neurons.replace(**neuron) if neuron else neurons
    made = neurons.make()
    levels = (args.target_timesteps or BALANCED_TIMESTEPS) * made.max_spikes
    settings = {
        "hook_factory": BalancingHookFactory(timesteps=levels, v_init=made.v_init)
        if args.threshold_balancing else HookFactory(**hook) if hook else None,
        "neuron_factory": neurons if neuron else None,
        "batch_size": args.batch_size, "exclude": args.exclude, "maxpool": args.maxpool,
        "keep_analog": args.keep_analog, "drop_output_softmax": args.drop_softmax,
        "bias_calibration": args.bias_calibration, "spike_counts": args.spike_counts,
        "format": args.format, "target_timesteps": args.target_timesteps if auto else None}
    args.settings = {name: value for name, value in settings.items() if value is not None}
    resolve_config(None, args.preset, args.settings)  # every value checked before any work


def cluster_of(args: argparse.Namespace) -> AbstractContextManager:
    """The Ray cluster that ``--workers`` or ``--ray-address`` asks for (a context
    that yields a ``Cluster``), or a context that yields None."""
    if args.workers is None and args.ray_address is None:
        return nullcontext()
    from onnx_snn.runtime.cluster import Cluster

    return Cluster(workers=args.workers, address=args.ray_address)


def run_convert(args: argparse.Namespace) -> dict:
    from onnx_snn.api import convert
    from onnx_snn.calibration.result import Calibration

    if args.calib is None and args.load_calibration is None:
        raise OnnxSnnError("give calibration data with --calib or scales with --load-calibration")
    calibration = Calibration.load(args.load_calibration) if args.load_calibration else None
    with cluster_of(args) as cluster:
        result = convert(args.model, args.calib, preset=args.preset, calibration=calibration,
                         progress=not args.no_progress, cluster=cluster, **args.settings)
    result.save(args.output, outputs=args.outputs)
    if args.save_calibration:
        args.outputs.add_json(args.save_calibration, result.calibration.to_dict())
    report = result.report()
    if result.search is not None:
        print(result.search.summary())
    signed = sum(layer.neuron.signed for layer in result.layers)
    print(f"converted {len(result.layers) - signed} Relu into spiking neurons"
          + (f" and added {signed} signed neurons" if signed else "")
          + f" -> {args.output} ({args.format} format)")
    for layer in report["layers"]:
        scale = np.asarray(layer["scale"])
        described = f"{float(scale):.6g}" if scale.ndim == 0 else \
            f"{scale.size} channels, {scale.min():.4g}..{scale.max():.4g}"
        print(f"  {layer['node']:<40} scale {described}")
    return report


def eval_settings(args: argparse.Namespace) -> None:
    from onnx_snn.measure.evaluation import check_delay_below

    if args.readout_delay != "auto":
        check_delay_below(args.readout_delay, args.timesteps)


def report_settings(args: argparse.Namespace) -> None:
    if len(args.timesteps) != 1:
        raise OnnxSnnError("report takes one T, e.g. --timesteps 64")


def run_eval(args: argparse.Namespace) -> dict:
    from onnx_snn.io.data import has_labels
    from onnx_snn.measure.agreement import ann_fidelity
    from onnx_snn.runtime.predictions import choose_output
    from onnx_snn.runtime.streaming import open_session

    session = open_session(args.model)
    instead = "give --ann ANN.onnx to compare every output with the ANN's instead"
    try:
        scored, unscored = choose_output(session.output_types, args.scored_output), None
    except OnnxSnnError as error:
        if args.scored_output is not None:
            raise
        if not args.ann:
            raise OnnxSnnError(f"{error}; {instead}") from error
        scored, unscored = None, "no output holds class scores or labels"
    if scored is not None and not has_labels(args.data):
        if not args.ann:
            raise OnnxSnnError(f"{args.data} has no labels 'y' to score output "
                               f"'{scored.name}': add them, or {instead}")
        scored, unscored = None, f"{args.data} has no labels"
    if args.fidelity and not args.ann:
        raise OnnxSnnError("--fidelity compares the outputs with the ANN's: add --ann ANN.onnx")
    if scored is None and args.readout_delay != 0:
        raise OnnxSnnError(f"{unscored}: a readout delay needs class scores and labels to "
                           "score; drop --readout-delay")
    result = {"ann_accuracy": None, "output": None, "snn_accuracy": {}, "readout_delay": {}}
    if scored is not None:
        result = _eval_accuracy(args, session, scored)
    if scored is None or args.fidelity:
        fidelity = ann_fidelity(session, args.ann, args.data, args.timesteps, args.batch_size)
        print(f"{unscored + ': ' if unscored else ''}each output against the ANN, the SNN's "
              f"averaged over T steps ({fidelity.samples} samples)")
        for line in fidelity.lines():
            print(f"  {line}")
        result["fidelity"] = fidelity.to_dict()
    return result


def _eval_accuracy(args: argparse.Namespace, session, scored) -> dict:
    """eval's accuracy of the SNN at each T (and of the ANN), printed and returned."""
    from onnx_snn.measure.evaluation import ann_accuracy, snn_accuracy

    ann = ann_accuracy(args.ann, args.data, batch_size=args.batch_size, output=scored.name) \
        if args.ann else None
    delays = _readout_delays(args, session, scored.name)
    snn = {}
    with cluster_of(args) as cluster:
        for delay in sorted(set(delays.values())):  # one run per distinct delay
            steps = [t for t in args.timesteps if delays[t] == delay]
            snn.update(snn_accuracy(args.model if cluster else session, args.data, None, steps,
                                    args.batch_size, readout_delay=delay, output=scored.name,
                                    cluster=cluster))
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
    from onnx_snn.runtime.readout import estimate_readout_delay

    return {t: estimate_readout_delay(session, args.calib, t, ann=args.ann,
                                      batch_size=args.batch_size, output=output)
            for t in args.timesteps}


def run_report(args: argparse.Namespace) -> dict:
    from onnx_snn.io.data import has_labels
    from onnx_snn.measure.report import make_report

    if not args.ann and not has_labels(args.data):
        raise OnnxSnnError(f"{args.data} has no labels 'y': add them, or give --ann ANN.onnx "
                           "to compare every output with the ANN's instead")

    with cluster_of(args) as cluster:
        result = make_report(args.model, args.data, ann=args.ann, timesteps=args.timesteps[0],
                             precision=args.precision, batch_size=args.batch_size,
                             output=args.scored_output, cluster=cluster)
    written = result.write(args.out_dir, outputs=args.outputs)
    print(f"wrote {', '.join(written)} to {args.out_dir}")
    curve = result.accuracy_curve
    if result.ann_accuracy is not None:
        print(f"ANN accuracy: {result.ann_accuracy:.4f}")
    ratio = result.totals["sop_mac_ratio"]
    energy = result.totals["energy_ratio"]
    scored = f"SNN accuracy at T = {result.timesteps}: {curve[-1]:.4f} (output " \
        f"'{result.output}')" if curve else f"no accuracy (no labels or class scores), T = " \
        f"{result.timesteps}"
    print(f"{scored}; SOP/MAC ratio {'n/a' if ratio is None else f'{ratio:.3f}'}; energy "
          f"ratio {'n/a' if energy is None else f'{energy:.3f}'}")
    if result.fidelity:
        final = str(result.timesteps)
        for name, values in result.fidelity["outputs"].items():
            error, r, agree = (values[key][final] for key in ("error", "correlation",
                                                              "agreement"))
            print(f"  output '{name}' against the ANN at T = {final}: rel. error "
                  f"{'n/a' if error is None else f'{error:.4f}'}, r "
                  f"{'n/a' if r is None else f'{r:.4f}'}, agreement "
                  f"{'n/a' if agree is None else f'{agree:.2%}'}")
    return result.to_dict()


def run_demo(args: argparse.Namespace) -> dict:
    from onnx_snn.demo.run import run_demo

    if args.out is not None:  # made now, and removed again if the demo stops
        args.outputs.make_folders(args.out)
    return run_demo(args.out, outputs=args.outputs)


def run_doctor(args: argparse.Namespace) -> dict:
    from onnx_snn.ops.native import native_report

    report = native_report()
    print(f"IFNode backend: {report['backend']}")
    print(f"  library:     {report['library'] or 'none found'}")
    print(f"  why:         {report['reason']}")
    print(f"  onnxruntime {report['onnxruntime']}, onnx-snn {report['onnx_snn']}")
    return report


COMMANDS = {"inspect": Command(run_inspect), "convert": Command(run_convert, conversion_settings),
            "eval": Command(run_eval, eval_settings),
            "report": Command(run_report, report_settings),
            "demo": Command(run_demo), "doctor": Command(run_doctor)}
