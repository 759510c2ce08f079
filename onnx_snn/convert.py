"""ANN -> SNN in one call: prepare, calibrate, rewrite, add the time axis."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from onnx_snn import __version__
from onnx_snn.activations import rectifier_cap
from onnx_snn.convertibility import check_activations, check_convertible, kept_analog_warning
from onnx_snn.bias_calibration import calibrate_biases, check_bias_steps
from onnx_snn.calibration import (
    BalancingHookFactory, Calibration, HookFactory, calibrate, check_scales,
)
from onnx_snn.data import DataSource
from onnx_snn.errors import OnnxSnnError
from onnx_snn.formats import check_format, export_format
from onnx_snn.inspection import policy_graph, spiking_caveats
from onnx_snn.instrument import add_spike_counts
from onnx_snn.model_info import (
    ACCUMULATORS, NEURONS, OUTPUT_SCALES, TIMESTEPS, TIMESTEPS_KEY, VERSION_KEY, NeuronInfo,
    neurons_json,
)
from onnx_snn.naming import NameScope
from onnx_snn.modelio import ModelLike, stage_model
from onnx_snn.outputs import OutputSet
from onnx_snn.neurons import NeuronFactory
from onnx_snn.patterns import PatternPass, compose
from onnx_snn.prepare import ai_onnx_opset, infer_shapes
from onnx_snn.scale_folding import FoldOutputScales
from onnx_snn.spiking import ReluToNeuron, SpikingLayer, check_layer
from onnx_snn.temporal import TimeFolding
from onnx_snn.validation import check_bool

#: Picks the factories for one Relu node, or None to keep it an analog Relu.
FactoryChooser = Callable[[gs.Node], "tuple[HookFactory, NeuronFactory] | None"]
#: Functions need IR version 8 or newer.
MIN_IR_VERSION = 8


@dataclass
class SpikingModel:
    """A converted model with the calibration and layers that made it."""

    model: onnx.ModelProto
    calibration: Calibration
    layers: list[SpikingLayer]

    def report(self) -> dict[str, Any]:
        """Machine-readable summary: one entry per converted Relu, in graph order."""
        return {"layers": [{"node": layer.node, "scale": np.asarray(layer.scale).tolist(),
                            "v_threshold": layer.neuron.v_threshold,
                            "neuron": layer.neuron.op_type} for layer in self.layers],
                "calibration": {"batches": self.calibration.batches,
                                "samples": self.calibration.samples}}

    def save(self, path: str | os.PathLike, report: str | os.PathLike | None = None,
             outputs: OutputSet | None = None) -> Path:
        """Write the model (and optionally the JSON report): both or neither, atomically.

        With ``outputs`` they are only staged there, to be committed with the
        other outputs of the same command.
        """
        with OutputSet() as own:
            staging = outputs or own
            saved = stage_model(staging, self.model, path)
            if report is not None:
                staging.add_json(report, self.report())
        return saved


@dataclass(frozen=True)
class Preset:
    """Defaults for the conversion methods; explicit arguments to ``convert`` win."""

    hook_factory: Callable[[], HookFactory]
    neuron_factory: Callable[[], NeuronFactory]
    maxpool: str


#: ``spikingjelly``: the classic conversion, as SpikingJelly's ann2snn does it: one
#: scale per layer (``HookFactory``: Max unless a mode is given, momentum 0.1), IF
#: neurons with θ = 1, soft reset, starting at 0, MaxPool kept. ``best``: the most
#: accurate at small T that we measured (README): local threshold balancing
#: per channel, half-threshold start, MaxPool before the neuron. (Bias
#: calibration on top gave no consistent gain on our nets; it stays an option.)
PRESETS = {
    "spikingjelly": Preset(HookFactory, NeuronFactory, "keep"),
    "best": Preset(BalancingHookFactory, lambda: NeuronFactory(v_init=0.5), "before"),
}


def convert(model: ModelLike, data: Any = None, *, preset: str | None = None,
            hook_factory: HookFactory | None = None,
            neuron_factory: NeuronFactory | None = None, batch_size: int = 100,
            exclude: Collection[str] = (), factories: FactoryChooser | None = None,
            keep_analog: bool = False, maxpool: str | None = None,
            drop_output_softmax: bool = False, bias_calibration: int | None = None,
            spike_counts: bool = False, calibration: Calibration | None = None,
            progress: bool = True, format: str = "onnx-snn") -> SpikingModel:
    """Convert an ONNX ReLU network into a spiking network.

    ``model``: a path or ModelProto. ``data``: calibration data in any form
    ``onnx_snn.data.batches`` accepts, or None when ``calibration`` (a saved
    ``Calibration``) is given. Each rectifier (Relu, or Clip(0, a) whose scale
    is then capped at a) is calibrated with a hook from ``hook_factory`` and
    replaced by a neuron from ``neuron_factory``; those named in ``exclude``
    stay analog, and ``factories(node)`` may choose per node (None keeps it
    analog). Other activations are an error unless ``keep_analog``; a Softmax
    at the output is applied per step, or removed with ``drop_output_softmax``.
    ``maxpool`` is the MaxPool policy: "keep", "before" or "avg"
    (``onnx_snn.pooling``). ``bias_calibration=T`` shifts each layer's bias so
    its mean output at T steps matches the ANN (``onnx_snn.bias_calibration``).
    ``preset`` ("spikingjelly" or "best", see ``PRESETS``) supplies defaults for
    the factories and ``maxpool``. ``spike_counts`` adds
    an output ``<layer>__spike_count`` [N] per neuron layer, counted in the graph
    (``onnx_snn.instrument``). ``format`` is the model's form (``onnx_snn.formats``):
    "onnx-snn" (IFNode ops with their function), "standard" (ai.onnx ops only) or
    "streaming" (one time step per run, with the membrane state as inputs/outputs).
    """
    check_format(format)
    _check_arguments(hook_factory=hook_factory, neuron_factory=neuron_factory,
                     exclude=exclude, factories=factories, keep_analog=keep_analog,
                     drop_output_softmax=drop_output_softmax, spike_counts=spike_counts,
                     progress=progress, bias_calibration=bias_calibration,
                     calibration=calibration)
    if preset is not None and preset not in PRESETS:
        raise OnnxSnnError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    defaults = PRESETS[preset or "spikingjelly"]
    hook_factory = hook_factory or defaults.hook_factory()
    neuron_factory = neuron_factory or defaults.neuron_factory()
    maxpool = maxpool or defaults.maxpool
    graph, _ = policy_graph(model, maxpool, drop_output_softmax)
    kept = check_activations(graph, keep_analog)
    if kept:
        warnings.warn(kept_analog_warning(kept), stacklevel=2)
    plan = _plan(graph, hook_factory, neuron_factory, exclude, factories,
                 name=str(model) if isinstance(model, (str, os.PathLike)) else "the model")
    check_convertible(graph, plan)
    for caveat in spiking_caveats(graph, plan):
        warnings.warn(f"{caveat.op} '{caveat.node}' {caveat.note}", stacklevel=2)
    ann = infer_shapes(gs.export_onnx(graph.cleanup().toposort()))  # the policies add tensors

    data = None if data is None else DataSource(data)  # read once per pass, however given
    if calibration is None:
        if data is None:
            raise OnnxSnnError("no calibration data: pass data or a saved calibration")
        calibration = calibrate(ann, data, {name: hf.create() for name, (hf, _) in plan.items()},
                                batch_size=batch_size, progress=progress)
    else:
        missing = sorted(set(plan) - set(calibration.scales))
        if missing:
            raise OnnxSnnError(f"the calibration has no scale for Relu "
                               f"{', '.join(map(repr, missing))}")
        calibration = Calibration([layer for layer in calibration.layers if layer.node in plan],
                                  calibration.batches, calibration.samples)
    check_scales(calibration)
    rectifiers = {node.name: node for node in graph.nodes if node.name in plan}
    layers = []
    for name, calibrated in calibration.scales.items():
        cap = rectifier_cap(rectifiers[name])
        scale = np.minimum(calibrated, cap) if np.ndim(calibrated) else min(calibrated, cap)
        layers.append(check_layer(SpikingLayer(name, scale, plan[name][1].create(scale)),
                                  rectifiers[name].outputs[0]))
    if bias_calibration:
        if data is None:
            raise OnnxSnnError("bias calibration needs calibration data")
        layers = calibrate_biases(ann, layers, data, bias_calibration,
                                  partial(build_spiking_model, fold_scales=False),
                                  batch_size=batch_size, progress=progress)
    snn = build_spiking_model(ann, layers)
    snn = add_spike_counts(snn) if spike_counts else snn
    return SpikingModel(export_format(snn, format), calibration, layers)


def _check_arguments(**arguments: Any) -> None:
    """Refuse arguments of ``convert`` of the wrong kind, naming them."""
    for flag in ("keep_analog", "drop_output_softmax", "spike_counts", "progress"):
        check_bool(arguments[flag], flag)
    for name in ("hook_factory", "neuron_factory"):
        value = arguments[name]
        if value is not None and not callable(getattr(value, "create", None)):
            raise OnnxSnnError(f"{name} must be a factory with a create() method "
                               f"(HookFactory, NeuronFactory), got {value!r}")
    exclude = arguments["exclude"]
    if isinstance(exclude, str) or not isinstance(exclude, Collection) \
            or not all(isinstance(name, str) for name in exclude):
        raise OnnxSnnError(f"exclude must be a list of node names, got {exclude!r}")
    if arguments["factories"] is not None and not callable(arguments["factories"]):
        raise OnnxSnnError(f"factories must be a function node -> (HookFactory, NeuronFactory) "
                           f"or None, got {arguments['factories']!r}")
    if arguments["bias_calibration"] is not None:
        check_bias_steps(arguments["bias_calibration"])
    if arguments["calibration"] is not None and not isinstance(arguments["calibration"],
                                                               Calibration):
        raise OnnxSnnError(f"calibration must be a Calibration, got "
                           f"{type(arguments['calibration']).__name__}")


def build_spiking_model(ann: onnx.ModelProto, layers: list[SpikingLayer],
                        fold_scales: bool = True) -> onnx.ModelProto:
    """Rewrite a prepared ANN: neurons in place of ``layers``' Relus, plus the time axis.

    ``fold_scales`` moves output scales into the next layers' weights
    (``onnx_snn.scale_folding``); without it every ``<layer>__output_scaler`` stays.
    """
    graph = gs.import_onnx(ann)
    scope = NameScope.of(graph)
    timesteps = gs.Variable(scope.name(TIMESTEPS), np.int64, [])
    graph.inputs.append(timesteps)
    activation = {node.name: node.outputs[0] for node in graph.nodes}  # what each node makes
    replaced = [NeuronInfo(layer.node, "", activation[layer.node].name,
                           _values_per_sample(activation[layer.node])) for layer in layers]
    folded = {layer.node for layer in layers} if fold_scales else set()
    time_folding = TimeFolding(timesteps, scope)
    graph = compose(PatternPass(ReluToNeuron(layers, timesteps, scope)),
                    FoldOutputScales(folded), time_folding)(graph)
    nodes = {node.name: node for node in graph.nodes}
    replaced = [dataclasses.replace(info, spikes=nodes[info.node].outputs[0].name)
                for info in replaced]
    opset = ai_onnx_opset(ann)
    snn = gs.export_onnx(graph)
    snn.ir_version = max(ann.ir_version, MIN_IR_VERSION)
    imported = {entry.domain for entry in snn.opset_import}
    defined = {(f.domain, f.name) for f in snn.functions}
    for layer in layers:
        neuron = layer.neuron
        if neuron.domain not in imported:
            snn.opset_import.append(helper.make_opsetid(neuron.domain, neuron.domain_version))
            imported.add(neuron.domain)
        if (neuron.domain, neuron.op_type) not in defined:
            snn.functions.append(neuron.function(opset))
            defined.add((neuron.domain, neuron.op_type))
    helper.set_model_props(snn, {VERSION_KEY: __version__,
                                 TIMESTEPS_KEY: timesteps.name,
                                 OUTPUT_SCALES: json.dumps({layer.node: np.asarray(
                                     layer.scale, np.float32).tolist() for layer in layers}),
                                 NEURONS: neurons_json(replaced),
                                 ACCUMULATORS: json.dumps(time_folding.accumulators)})
    return onnx.shape_inference.infer_shapes(snn)


def _values_per_sample(tensor: gs.Tensor) -> int | None:
    """Elements per sample of a tensor [N, ...] whose other dims are static, else None."""
    dims = list(tensor.shape or [])[1:]
    if not tensor.shape or not all(isinstance(d, int) for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))


def _plan(graph: gs.Graph, hook_factory: HookFactory, neuron_factory: NeuronFactory,
          exclude: Collection[str], factories: FactoryChooser | None, name: str
          ) -> dict[str, tuple[HookFactory, NeuronFactory]]:
    """Factories for every rectifier to convert, by node name, in graph order."""
    relus = [node for node in graph.nodes if rectifier_cap(node) is not None]
    unknown = sorted(set(exclude) - {node.name for node in relus})
    if unknown:
        raise OnnxSnnError(f"cannot exclude {', '.join(map(repr, unknown))}: no Relu node of "
                           f"that name (Relus: {', '.join(n.name for n in relus) or 'none'})")
    plan = {}
    for node in relus:
        if node.name in exclude:
            continue
        dtype = node.outputs[0].dtype
        if dtype is not None and np.dtype(dtype) != np.float32:
            raise OnnxSnnError(f"Relu '{node.name}' computes in {np.dtype(dtype)}; onnx-snn "
                               "converts float32 networks")
        chosen = factories(node) if factories else (hook_factory, neuron_factory)
        if chosen is not None:
            plan[node.name] = chosen
    if not plan:
        raise OnnxSnnError(f"{name}: no Relu to convert" if not relus else
                           f"{name}: every Relu is excluded, nothing to convert")
    return plan
