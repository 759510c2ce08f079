"""What a spiking net does: accuracy over time, firing rates, synaptic operations,
energy, and how well each layer's rate matches the ANN (SPEC §9).

Everything is measured in onnxruntime during real runs over the data, batch by
batch: spike counts and time-averaged outputs are reductions added to the
model (``onnx_snn.instrument``); the host keeps running sums only, so memory
stays bounded however many samples there are.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs
from tqdm.auto import tqdm

from onnx_snn.costs import model_costs
from onnx_snn.data import check_batch_size
from onnx_snn.errors import OnnxSnnError
from onnx_snn.instrument import RATE_SUFFIX, SPIKE_COUNT_SUFFIX, add_rate_outputs, add_spike_counts
from onnx_snn.modelio import ModelLike, atomic_write, load_model, save_json
from onnx_snn.prepare import prepare
from onnx_snn.runtime import AnnSession, SpikingSession, check_timesteps

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
    totals: dict[str, float]
    scatter: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("scatter")
        return data

    def write(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write report.json, the PNG plots and report.md into ``out_dir``."""
        from onnx_snn.report_plots import write_plots, write_summary

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [save_json(self.to_dict(), out / "report.json")]
        plots = write_plots(self, out)
        written += plots
        written.append(atomic_write(out / "report.md",
                                    lambda tmp: tmp.write_text(write_summary(self, plots))))
        return written


class _Correlation:
    """Streaming Pearson correlation of paired samples."""

    def __init__(self) -> None:
        self.sums = np.zeros(5)  # Σa, Σb, Σa², Σb², Σab
        self.count = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        self.sums += [a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()]
        self.count += a.size

    def value(self) -> float | None:
        n = self.count
        sa, sb, saa, sbb, sab = self.sums
        var_a, var_b = n * saa - sa * sa, n * sbb - sb * sb
        if n < 2 or var_a <= 0 or var_b <= 0:
            return None
        return float((n * sab - sa * sb) / np.sqrt(var_a * var_b))


def _ann_session(ann: ModelLike, layers: list[str]) -> AnnSession:
    """The prepared ANN, fetching its first output and each converted Relu's output."""
    prepared = prepare(load_model(ann))
    graph = gs.import_onnx(prepared)
    nodes = {node.name: node for node in graph.nodes}
    missing = [name for name in layers if name not in nodes]
    if missing:
        raise OnnxSnnError(f"the ANN has no Relu {', '.join(map(repr, missing))}: is it the "
                           "model this SNN was converted from?")
    activations = [nodes[name].outputs[0] for name in layers]
    for tensor in activations:
        if tensor not in graph.outputs:
            graph.outputs.append(tensor)
    return AnnSession(gs.export_onnx(graph),
                      [graph.outputs[0].name] + [t.name for t in activations])


def make_report(snn: ModelLike, x: np.ndarray, y: np.ndarray, *, ann: ModelLike | None = None,
                timesteps: int = 64, precision: str = "fp32", batch_size: int = 128,
                scatter_points: int = 2000, progress: bool = True, seed: int = 0) -> SnnReport:
    """Run ``snn`` on ``x`` for ``timesteps`` steps and measure it (see module doc).

    ``y``: integer labels. ``ann``: the original ANN, for its accuracy and the
    rate-against-activation comparison. ``precision`` picks the energy per
    operation (fp32, fp16, int8).
    """
    check_timesteps(timesteps)
    if precision not in ENERGY_PJ:
        raise OnnxSnnError(f"precision {precision!r} is not valid: use one of "
                           f"{', '.join(ENERGY_PJ)}")
    batch_size = check_batch_size(batch_size)
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x) or not len(y):
        raise OnnxSnnError(f"labels must be integers, one per sample: got {list(y.shape)} "
                           f"({y.dtype}) for {len(x)} samples")
    model = load_model(snn)
    costs = model_costs(model)
    names = [layer.node for layer in costs.layers]
    instrumented = add_spike_counts(model)
    if ann is not None:
        instrumented = add_rate_outputs(instrumented)
        ann_session = _ann_session(ann, names)
    session = SpikingSession(instrumented)

    rng = np.random.default_rng(seed)
    correct = np.zeros(timesteps, dtype=np.int64)
    ann_correct = 0
    spikes = dict.fromkeys(names, 0.0)
    correlations = {name: _Correlation() for name in names}
    scatter = {name: [] for name in names}
    per_batch_points = max(1, scatter_points // max(1, -(-len(y) // batch_size)))
    for start in tqdm(range(0, len(y), batch_size), desc="report", unit="batch",
                      disable=not progress, leave=False):
        batch, labels = x[start:start + batch_size], y[start:start + batch_size]
        result = session.run(batch, timesteps)
        outputs = result.outputs
        correct += (result.predictions() == labels).sum(axis=1)
        for name in names:
            spikes[name] += float(outputs[f"{name}{SPIKE_COUNT_SUFFIX}"].sum())
        if ann is None:
            continue
        ann_results = ann_session.run(batch, where=f"samples {start}-")
        ann_correct += int((ann_results[0].argmax(axis=-1) == labels).sum())
        for name, activation in zip(names, ann_results[1:]):
            rate = outputs[f"{name}{RATE_SUFFIX}"].reshape(-1)
            activation = activation.reshape(-1)
            correlations[name].add(activation, rate)
            pick = rng.choice(rate.size, size=min(per_batch_points, rate.size), replace=False)
            scatter[name].append(np.stack([activation[pick], rate[pick]], axis=1))

    samples = len(y)
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
              "snn_pj": mac_pj * costs.analog_macs + ac_pj * total_sops,
              "precision": precision}
    totals = {"ann_macs": costs.total_macs, "analog_macs": costs.analog_macs, "sops": total_sops,
              "sop_mac_ratio": total_sops / costs.total_macs,
              "energy_ratio": energy["snn_pj"] / energy["ann_pj"]}
    return SnnReport(timesteps, samples, (correct / samples).tolist(),
                     ann_correct / samples if ann is not None else None, layers, energy, totals,
                     {name: np.concatenate(points) for name, points in scatter.items()
                      if points})
