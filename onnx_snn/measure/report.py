"""What a spiking net does: accuracy over time, firing rates, synaptic operations,
energy, and how well each layer's rate matches the ANN (docs/semantics.md, "Efficiency metrics").

Everything is measured in onnxruntime during real runs over the data, batch by
batch: spike counts and time-averaged outputs are reductions added to the
model (``onnx_snn.measure.instrument``); the host keeps running sums only, so memory
stays bounded however many samples there are.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.prepare import replace_zipmaps
from onnx_snn.io.data import (
    LabelledBatch,
    batches,
    check_batch_size,
    has_labels,
    labelled_batches,
)
from onnx_snn.io.metadata import metadata, neurons, output_scales
from onnx_snn.io.models import ModelLike, load_model
from onnx_snn.io.outputs import OutputSet
from onnx_snn.measure.agreement import Correlation, Fidelity, OutputTally
from onnx_snn.measure.costs import ModelCosts, model_costs
from onnx_snn.measure.instrument import instrument
from onnx_snn.runtime.cluster import Cluster, map_batches
from onnx_snn.runtime.predictions import ann_predictions, choose_output
from onnx_snn.runtime.sessions import AnnSession, SpikingOutput, check_timesteps
from onnx_snn.runtime.streaming import open_session

#: Energy per operation at 45 nm, pJ (Horowitz 2014): (MAC, accumulate).
ENERGY_PJ = {"fp32": (4.6, 0.9), "fp16": (1.5, 0.4), "int8": (0.23, 0.03)}


@dataclass
class LayerReport:
    """One neuron layer, per sample unless stated."""

    node: str
    neurons: int
    firing_rate: float        # spikes / (neurons × T), averaged over samples
    spikes: float             # per sample, over T steps
    sops: float               # synaptic operations per sample over T steps
    ann_macs: int             # MACs of the ANN layers this layer feeds
    rate_vs_ann_r: float | None  # Pearson r of rate × scale against the ANN activation


@dataclass
class SnnReport:
    """The numbers of ``onnx-snn report``; ``to_dict()`` is ``report.json``."""

    timesteps: int
    samples: int
    accuracy_curve: list[float]
    ann_accuracy: float | None
    layers: list[LayerReport]
    energy: dict[str, Any]
    totals: dict[str, float | None]
    scatter: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    output: str | None = None  # the scored output
    #: Each output against the ANN at T = 1, 2, 4, ..., timesteps (``Fidelity.to_dict``),
    #: with an ANN; accuracy_curve is empty when there are no labels or class scores.
    fidelity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("scatter")
        return data

    def write(self, out_dir: str | os.PathLike, outputs: OutputSet | None = None) -> list[str]:
        """Write report.json, the PNG plots and report.md into the folder ``out_dir``,
        all at once (``onnx_snn.io.outputs``); returns the file names. With ``outputs``
        the folder is only staged there, to be committed with the command's other
        outputs."""
        from onnx_snn.measure.plots import REPORT_FILES, write_plots, write_summary

        written: list[str] = []

        def fill(folder: Path) -> tuple[str, ...]:
            (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            plots = write_plots(self, folder)
            (folder / "report.md").write_text(write_summary(self, plots))
            written.extend(["report.json", *(plot.name for plot in plots), "report.md"])
            return REPORT_FILES

        with OutputSet() as own:
            (outputs or own).add_folder(out_dir, fill)
        return written


def _ann_session(ann: ModelLike, outputs: list[str], activations: list[str]) -> AnnSession:
    """The ANN, fetching ``outputs`` (the SNN's) and the activations the neurons replaced."""
    model = replace_zipmaps(load_model(ann))
    known = {t for node in model.graph.node for t in node.output} \
        | {value.name for value in model.graph.input}
    missing = [name for name in [*outputs, *activations] if name not in known]
    if missing:
        name = ann if isinstance(ann, (str, os.PathLike)) else "the model"
        raise OnnxSnnError(f"the ANN {name} has no tensor {', '.join(map(repr, missing))}: is "
                           "it the model this SNN was converted from?")
    declared = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name)
                              for name in dict.fromkeys([*outputs, *activations])
                              if name not in declared)
    return AnnSession(model, [*outputs, *activations])


def fidelity_steps(timesteps: int) -> list[int]:
    """The T at which a report compares outputs with the ANN: 1, 2, 4, ... and T."""
    return sorted({2 ** k for k in range(timesteps.bit_length()) if 2 ** k <= timesteps}
                  | {timesteps})


@dataclass
class _BatchPartial:
    """What one batch adds to the report; folded in batch order."""

    correct: np.ndarray                  # right predictions after each step
    samples: int
    spikes: dict[str, float]             # spikes per neuron layer
    ann_correct: int = 0
    moments: dict[str, tuple] = field(default_factory=dict)   # per layer, for Correlation
    scatter: dict[str, np.ndarray] = field(default_factory=dict)
    costs: ModelCosts | None = None      # with a worker's first batch
    tallies: dict[str, OutputTally] = field(default_factory=dict)  # per output, with an ANN


class ReportWorker:
    """Per batch: runs the instrumented SNN (and the ANN, when given) and returns a
    ``_BatchPartial``. Scatter points are drawn with a generator seeded by ``seed``
    and the batch's first sample (or, without labels, its input's bytes), so they do
    not depend on where the batch runs.

    ``labelled``: whether the data has labels; accuracy is measured when it does and
    an output holds class scores or labels. With an ANN, every output of the SNN is
    also compared with the ANN's (``onnx_snn.measure.agreement``)."""

    def __init__(self, snn: onnx.ModelProto, ann: ModelLike | None, timesteps: int,
                 output: str | None, scatter_points: int, seed: int,
                 labelled: bool = True) -> None:
        self.model = snn
        props = metadata(snn)
        self.layers = neurons(props, "the SNN")
        self.instrumented = instrument(snn, counts=True, sums=ann is not None)
        self.session = open_session(self.instrumented.model)
        model_outputs = {o.name for o in snn.graph.output}  # not the instrumentation's
        kinds = {name: kind for name, kind in self.session.output_types.items()
                 if name in model_outputs}
        try:
            self.scored = choose_output(kinds, output)
        except OnnxSnnError:
            if output is not None or ann is None:
                raise
            self.scored = None  # nothing to score: the comparison with the ANN only
        self.labelled = labelled and self.scored is not None
        self.compared = [name for name, (dtype, _) in kinds.items() if dtype is not None] \
            if ann is not None else []
        self.marks = fidelity_steps(timesteps)
        self.scales = output_scales(props)
        self.ann = None if ann is None else _ann_session(
            ann, self.compared, [layer.activation for layer in self.layers])
        self.timesteps, self.points, self.seed = timesteps, scatter_points, seed
        self.costs_given = False

    def __call__(self, batch: LabelledBatch | dict[str, np.ndarray]) -> _BatchPartial:
        feed, labels, start = (batch.feed, batch.labels, batch.start) \
            if isinstance(batch, LabelledBatch) else (batch, None, None)
        rows = len(next(iter(feed.values())))
        outputs = self.session.run(feed, self.timesteps).outputs
        correct = np.zeros(self.timesteps, dtype=np.int64)
        if self.labelled:
            self.scored.check_labels(labels, start)
            correct = (SpikingOutput(outputs).predictions(0, self.scored.name)
                       == labels).sum(axis=1)
        part = _BatchPartial(correct, rows,
                             {layer.node: float(outputs[self.instrumented.counts[layer.node]]
                                                .sum()) for layer in self.layers})
        if not self.costs_given:  # shapes measured on one sample: the same everywhere
            part.costs = model_costs(self.model, feed)
            self.costs_given = True
        if self.ann is None:
            return part
        ann_results = self.ann.run(feed, where="a batch" if start is None
                                   else f"samples {start}-{start + rows - 1}")
        count = len(self.compared)
        if self.labelled:
            scored = ann_results[self.compared.index(self.scored.name)]
            part.ann_correct = int((ann_predictions(self.scored, scored) == labels).sum())
        for name, value in zip(self.compared, ann_results[:count]):
            part.tallies[name] = OutputTally(name, self.marks)
            part.tallies[name].add(outputs[name], value)
        first = next(iter(feed.values()))
        rng = np.random.default_rng([self.seed, start if start is not None
                                     else zlib.crc32(np.ascontiguousarray(first).tobytes())])
        for layer, activation in zip(self.layers, ann_results[count:]):
            rate = _scaled_rate(outputs[self.instrumented.sums[layer.node]] / self.timesteps,
                                self.scales[layer.node])
            activation = activation.reshape(-1)
            if activation.size != rate.size:
                raise OnnxSnnError(f"neuron layer '{layer.node}' has {rate.size} values in a "
                                   f"batch, its ANN tensor '{layer.activation}' "
                                   f"{activation.size}: is the ANN the model this SNN was "
                                   "converted from?")
            part.moments[layer.node] = Correlation.batch_moments(activation, rate)
            pick = rng.choice(rate.size, size=min(self.points, rate.size), replace=False)
            part.scatter[layer.node] = np.stack([activation[pick], rate[pick]], axis=1)
        return part


def make_report(snn: ModelLike, data: Any, labels: Any = None, *,
                ann: ModelLike | None = None, timesteps: int = 64, precision: str = "fp32",
                batch_size: int = 128, scatter_points: int = 2000, progress: bool = True,
                seed: int = 0, output: str | None = None,
                cluster: Cluster | None = None) -> SnnReport:
    """Run ``snn`` (any format) on ``data`` for ``timesteps`` steps and measure it
    (see module doc).

    ``data``: inputs with labels in any form ``onnx_snn.io.data.labelled_batches``
    takes (``labels`` separately for an array; class indices or one-hot rows).
    ``ann``: the original ANN, for its accuracy, the rate-against-activation
    comparison and the fidelity of every output (``onnx_snn.measure.agreement``) at
    T = 1, 2, 4, ..., ``timesteps``. Without labels or a scored output, only that
    comparison is made (an ANN is then needed). ``precision`` picks the
    energy per operation (fp32, fp16, int8). ``output`` picks the scored output.
    ``cluster``: run the batches on its Ray workers; the sums and moments are folded
    in batch order, so the report is the same bits.
    """
    timesteps = check_timesteps(timesteps)
    if precision not in ENERGY_PJ:
        raise OnnxSnnError(f"precision {precision!r} is not valid: use one of "
                           f"{', '.join(ENERGY_PJ)}")
    batch_size = check_batch_size(batch_size)
    model = load_model(snn)
    layers_info = neurons(metadata(model),
                          str(snn) if isinstance(snn, (str, os.PathLike)) else "the SNN")
    names = [layer.node for layer in layers_info]
    labelled = has_labels(data, labels)
    if not labelled and ann is None:
        raise OnnxSnnError("the data has no labels to score: give labels ('y'), or the ANN "
                           "to compare every output with it")
    # checks them all here
    local = ReportWorker(model, ann, timesteps, output, 1, seed, labelled)
    local.session.plan(timesteps)  # one sample-step must fit, before anything is allocated
    specs = local.session.batch_specs
    labels = labels if local.labelled else None
    expected = (labelled_batches(data, specs, batch_size, labels) if local.labelled
                else batches(data, specs, batch_size)).num_batches or 1
    local.points = max(1, scatter_points // expected)
    recipe = (partial(ReportWorker, model, None if ann is None else load_model(ann), timesteps,
                      output, local.points, seed, local.labelled) if cluster else lambda: local)
    costs = None
    tallies = {name: OutputTally(name, local.marks) for name in local.compared}

    correct = np.zeros(timesteps, dtype=np.int64)
    ann_correct = samples = 0
    spikes = dict.fromkeys(names, 0.0)
    correlations = {name: Correlation() for name in names}
    scatter = {name: [] for name in names}
    for part in map_batches(recipe, data, specs, batch_size, cluster, labelled=local.labelled,
                            labels=labels, desc="report", progress=progress):
        costs = costs or part.costs
        correct += part.correct
        samples += part.samples
        ann_correct += part.ann_correct
        for name in names:
            spikes[name] += part.spikes[name]
        for name, moments in part.moments.items():
            correlations[name].merge(*moments)
            scatter[name].append(part.scatter[name])
        for name, tally in part.tallies.items():
            tallies[name].merge(tally)

    mac_pj, ac_pj = ENERGY_PJ[precision]
    layers = []
    for cost in costs.layers:
        per_sample = spikes[cost.node] / samples
        layers.append(LayerReport(
            cost.node, cost.neurons, per_sample / (cost.neurons * timesteps), per_sample,
            per_sample * cost.fan_out, cost.ann_macs,
            correlations[cost.node].value() if ann is not None else None))
    total_sops = sum(layer.sops for layer in layers)
    energy = {"ann_pj": mac_pj * costs.total_macs,
              "snn_pj": mac_pj * (costs.analog_macs + costs.td_ops * timesteps)
              + ac_pj * total_sops,
              "precision": precision}
    totals = {"ann_macs": costs.total_macs, "analog_macs": costs.analog_macs,
              "td_ops": costs.td_ops * timesteps, "sops": total_sops,
              "sop_mac_ratio": total_sops / costs.total_macs if costs.total_macs else None,
              "energy_ratio": energy["snn_pj"] / energy["ann_pj"] if costs.total_macs
              else None}
    fidelity = None if ann is None else Fidelity(
        local.marks, samples, {name: tally.values() for name, tally in tallies.items()})
    return SnnReport(timesteps, samples,
                     (correct / samples).tolist() if local.labelled else [],
                     ann_correct / samples if ann is not None and local.labelled else None,
                     layers, energy, totals,
                     {name: np.concatenate(points) for name, points in scatter.items()
                      if points}, local.scored.name if local.labelled else None,
                     None if fidelity is None else fidelity.to_dict())


def _scaled_rate(rate: np.ndarray, scale: Any) -> np.ndarray:
    """Rates [N, F] times the layer's output scale (one, or one per channel: F = C·rest)."""
    scale = np.asarray(scale, np.float32)
    if scale.ndim:
        rate = rate.reshape(len(rate), scale.size, -1) * scale[:, None]
    else:
        rate = rate * scale
    return rate.reshape(-1)
