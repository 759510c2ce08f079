"""ANN -> SNN in one call (``convert``), and what it returns (``SpikingModel``).

The stages: prepare the ANN and apply the graph policies (``onnx_snn.graph``),
check it can be converted, calibrate (``onnx_snn.calibration``), plan a neuron per
rectifier, assemble the spiking model (``onnx_snn.snn``), and write it in the
requested format (``onnx_snn.export``). The settings come from a
``ConversionConfig`` (``onnx_snn.config``).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.calibration.bias import calibrate_biases
from onnx_snn.calibration.collectors import Collector, CollectorFactory
from onnx_snn.calibration.driver import calibrate
from onnx_snn.calibration.factories import HookFactory
from onnx_snn.calibration.result import Calibration, check_scales
from onnx_snn.config import AUTO, ConversionConfig, resolve_config
from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.formats import export_format
from onnx_snn.graph.activations import rectifier_cap
from onnx_snn.graph.convertibility import check_activations, check_convertible, kept_analog_warning
from onnx_snn.graph.inspection import conversion_graph, spiking_caveats
from onnx_snn.io.data import DataSource
from onnx_snn.io.models import ModelLike, load_model, stage_model
from onnx_snn.io.outputs import OutputSet
from onnx_snn.measure.agreement import ann_agreement
from onnx_snn.measure.instrument import add_spike_counts
from onnx_snn.runtime.cluster import Cluster, check_cluster
from onnx_snn.search import SEARCH_SAMPLES, SearchResult, candidates, search
from onnx_snn.snn.assembly import build_spiking_model
from onnx_snn.snn.neurons import Neuron, NeuronFactory
from onnx_snn.snn.rewrite import NeuronPlan, check_layer
from onnx_snn.validation import check_bool

#: How signed sites are calibrated when the hook factory balances thresholds layer by
#: layer (which assumes rectified values): the 99.9th percentile of |x| per layer.
SIGNED_SITE_HOOKS = HookFactory("99.9%")
#: Settings of a signed site's neuron unless the neuron factory sets them: a
#: half-threshold start (on the dynamo exports of ``tests/beyond_relu_models.py``,
#: first 200 test digits, T = 32: EfficientNet-style 86 % -> 100 %, MobileNetV3-style
#: 61.5 % -> 95.5 %, ViT 96.5 % -> 96 %).
SIGNED_SITE_NEURONS = {"v_init": 0.5}


@dataclass
class SpikingModel:
    """A converted model with the calibration and the neuron plan that made it."""

    model: onnx.ModelProto
    calibration: Calibration
    layers: list[NeuronPlan]
    #: With preset auto: what the search tried and chose.
    search: SearchResult | None = None

    def report(self) -> dict[str, Any]:
        """Machine-readable summary: one entry per converted Relu, in graph order."""
        report = {"layers": [{"node": layer.node, "scale": np.asarray(layer.scale).tolist(),
                              "v_threshold": layer.neuron.v_threshold,
                              "neuron": layer.neuron.op_type} for layer in self.layers],
                  "calibration": {"batches": self.calibration.batches,
                                  "samples": self.calibration.samples,
                                  "passes": self.calibration.passes}}
        if self.search is not None:
            report["search"] = self.search.to_dict()
        return report

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


def convert(model: ModelLike, data: Any = None, config: ConversionConfig | None = None, *,
            preset: str | None = None, calibration: Calibration | None = None,
            progress: bool = True, cluster: Cluster | None = None,
            **settings: Any) -> SpikingModel:
    """Convert an ONNX ReLU network into a spiking network.

    ``model``: a path or ModelProto. ``data``: calibration data in any form
    ``onnx_snn.io.data`` reads, or None when ``calibration`` (a saved
    ``Calibration``) is given. The settings are ``config``, or the preset named
    ``preset`` ("spikingjelly", the default, or "best"; ``onnx_snn.config.PRESETS``),
    with any ``ConversionConfig`` field given as a keyword replacing its value
    (``hook_factory=``, ``neuron_factory=``, ``batch_size=``, ``exclude=``,
    ``factories=``, ``keep_analog=``, ``maxpool=``, ``drop_output_softmax=``,
    ``bias_calibration=``, ``spike_counts=``, ``format=``).

    Each rectifier (Relu, or Clip(0, a) whose scale is then capped at a) is
    calibrated with a collector from the hook factory and replaced by a neuron
    from the neuron factory. A weighted layer that reads a value neither rectified
    nor from the input gets a signed neuron (``onnx_snn.graph.signed_sites``), and
    every other nonlinear op that spikes reach becomes a time-difference op, unless
    ``keep_analog`` (then they run step by step); an output Softmax can be removed
    with ``drop_output_softmax``. ``cluster`` (``onnx_snn.runtime.cluster.Cluster``)
    runs the calibration's batches on Ray workers, with the same scales.
    """
    config = resolve_config(config, preset, settings)
    check_bool(progress, "progress")
    check_cluster(cluster)
    if calibration is not None and not isinstance(calibration, Calibration):
        raise OnnxSnnError(f"calibration must be a Calibration, got "
                           f"{type(calibration).__name__}")
    data = None if data is None else DataSource(data)  # read once per pass, however given
    if preset == AUTO:
        return _searched(model, data, config, set(settings), calibration, progress, cluster)
    return _convert(model, data, config, calibration, progress, cluster)


def _convert(model: ModelLike, data: DataSource | None, config: ConversionConfig,
             calibration: Calibration | None, progress: bool, cluster: Cluster | None,
             calibrations: dict | None = None) -> SpikingModel:
    """``convert`` with one config; ``calibrations`` keeps the calibrations made, by
    hook factory and graph, for later calls with the same ones."""
    graph, _, sites = conversion_graph(model, config.maxpool, config.drop_output_softmax,
                                       config.keep_analog)
    kept = check_activations(graph, config.keep_analog)
    if kept:
        warnings.warn(kept_analog_warning(kept), stacklevel=3)
    plan = _plan(graph, config, sites,
                 name=str(model) if isinstance(model, (str, os.PathLike)) else "the model")
    check_convertible(graph, plan)
    for caveat in spiking_caveats(graph, plan, config.maxpool, config.keep_analog):
        warnings.warn(f"{caveat.op} '{caveat.node}' {caveat.note}", stacklevel=3)
    ann = gs.export_onnx(graph.cleanup().toposort())

    key = (id(config.hook_factory), config.maxpool == "before", config.drop_output_softmax)
    if calibrations is not None and key in calibrations:
        calibration = calibrations[key]
    signed = {site.name for site in sites}
    calibration = _calibration(ann, data, calibration, plan, config.batch_size, progress,
                               signed, cluster)
    if calibrations is not None:
        calibrations[key] = calibration
    planned = {node.name: node for node in graph.nodes if node.name in plan}
    layers = []
    for name, calibrated in calibration.scales.items():
        cap = rectifier_cap(planned[name]) or np.inf  # a signed site has no cap
        scale = np.minimum(calibrated, cap) if np.ndim(calibrated) else min(calibrated, cap)
        neuron = _made(plan[name][1].create(scale), Neuron, "neuron_factory", name)
        layers.append(check_layer(NeuronPlan(name, scale, neuron), planned[name].outputs[0],
                                  name in signed))
    if config.bias_calibration:
        if data is None:
            raise OnnxSnnError("bias calibration needs calibration data")
        layers = calibrate_biases(ann, layers, data, config.bias_calibration,
                                  partial(build_spiking_model, fold_scales=False,
                                          maxpool=config.maxpool,
                                          time_difference=not config.keep_analog),
                                  batch_size=config.batch_size, progress=progress,
                                  cluster=cluster)
    snn = build_spiking_model(ann, layers, maxpool=config.maxpool,
                              time_difference=not config.keep_analog)
    snn = add_spike_counts(snn) if config.spike_counts else snn
    return SpikingModel(export_format(snn, config.format), calibration, layers)


def _searched(model: ModelLike, data: DataSource | None, base: ConversionConfig,
              given: set[str], calibration: Calibration | None,
              progress: bool, cluster: Cluster | None) -> SpikingModel:
    """``convert`` with preset auto: the best of the searched combinations
    (``onnx_snn.search``), converted with the settings given."""
    if calibration is not None or data is None:
        raise OnnxSnnError("preset auto calibrates every combination it tries: give "
                           "calibration data, not a saved calibration")
    ann = load_model(model)
    has_maxpool = any(node.op_type == "MaxPool" for node in ann.graph.node)
    calibrations: dict = {}
    steps = base.target_timesteps
    plain = {"format": "onnx-snn", "spike_counts": False}  # scored in the fastest form

    def trial(config: ConversionConfig) -> SpikingModel:
        with warnings.catch_warnings():  # the chosen one's warnings come with the final run
            warnings.simplefilter("ignore")
            return _convert(ann, data, config.replace(**plain), None, progress, cluster,
                            calibrations)

    chosen, record = search(
        candidates(base, steps, given, has_maxpool), steps, convert=trial,
        score=lambda converted: ann_agreement(converted.model, ann, data, steps,
                                              batch_size=base.batch_size,
                                              max_samples=SEARCH_SAMPLES))
    final = _convert(ann, data, chosen, None, progress, cluster, calibrations)
    final.search = record
    return final


def _calibration(ann: onnx.ModelProto, data: DataSource | None,
                 calibration: Calibration | None, plan: dict, batch_size: int,
                 progress: bool, signed: set[str], cluster: Cluster | None) -> Calibration:
    """The scales of the planned rectifiers and signed sites (``signed``, measured by
    magnitude): measured on ``data``, or taken from a saved ``calibration``; checked
    either way."""
    if calibration is None:
        if data is None:
            raise OnnxSnnError("no calibration data: pass data or a saved calibration")
        hooks = {name: _made(hf.create(), Collector, "hook_factory", name)
                 for name, (hf, _) in plan.items()}
        calibration = calibrate(ann, data, hooks, batch_size=batch_size, progress=progress,
                                signed=signed,
                                cluster=cluster)
    else:
        missing = sorted(set(plan) - set(calibration.scales))
        if missing:
            raise OnnxSnnError(f"the calibration has no scale for Relu "
                               f"{', '.join(map(repr, missing))}")
        calibration = dataclasses.replace(
            calibration, layers=[layer for layer in calibration.layers if layer.node in plan])
    check_scales(calibration)
    return calibration


def _plan(graph: gs.Graph, config: ConversionConfig, sites: list[gs.Node], name: str
          ) -> dict[str, tuple[CollectorFactory, NeuronFactory]]:
    """Factories for every rectifier to convert and every signed site, by node name,
    in graph order. A site gets the neuron factory's signed neuron and, when the hook
    factory balances layer by layer, ``SIGNED_SITE_HOOKS`` instead (balancing assumes
    rectified values)."""
    relus = [node for node in graph.nodes if rectifier_cap(node) is not None]
    unknown = sorted(set(config.exclude) - {node.name for node in relus})
    if unknown:
        raise OnnxSnnError(f"cannot exclude {', '.join(map(repr, unknown))}: no Relu node of "
                           f"that name (Relus: {', '.join(n.name for n in relus) or 'none'})")
    plan = {}
    for node in relus:
        if node.name in config.exclude:
            continue
        dtype = node.outputs[0].dtype
        if dtype is not None and np.dtype(dtype) != np.float32:
            raise OnnxSnnError(f"Relu '{node.name}' computes in {np.dtype(dtype)}; onnx-snn "
                               "converts float32 networks")
        chosen = config.factories(node) if config.factories else \
            (config.hook_factory, config.neuron_factory)
        if chosen is not None and (not isinstance(chosen, tuple) or len(chosen) != 2 or not all(
                callable(getattr(factory, "create", None)) for factory in chosen)):
            raise OnnxSnnError(f"factories({node.name!r}) must return (hook factory, neuron "
                               f"factory) or None, got {chosen!r}")
        if chosen is not None:
            plan[node.name] = chosen
    if sites:
        hooks = config.hook_factory
        if _made(hooks.create(), Collector, "hook_factory", sites[0].name).layerwise:
            hooks = SIGNED_SITE_HOOKS
        try:
            neurons = config.neuron_factory.signed_variant(sites[0].name, SIGNED_SITE_NEURONS)
        except OnnxSnnError as error:
            raise OnnxSnnError(f"{name}: {error}") from error
        plan.update({site.name: (hooks, neurons) for site in sites})
        order = {node.name: index for index, node in enumerate(graph.nodes)}
        plan = dict(sorted(plan.items(), key=lambda item: order[item[0]]))
    if not plan:
        raise OnnxSnnError(f"{name}: no Relu to convert" if not relus else
                           f"{name}: every Relu is excluded, nothing to convert")
    return plan


def _made(made: Any, kind: type, factory: str, node: str) -> Any:
    """What a factory's ``create()`` returned for ``node``, if it is a ``kind``."""
    if not isinstance(made, kind):
        raise OnnxSnnError(f"{factory}.create() must return a {kind.__name__} (for node "
                           f"{node!r}), got {made!r}")
    return made
