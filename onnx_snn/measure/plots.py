"""PNG plots and the markdown summary of an ``SnnReport`` (matplotlib, no display)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _figure(width: float = 7.0, height: float = 4.2, **subplots):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), **subplots)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)
    return path


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else f"…{name[-(width - 1):]}"


def accuracy_plot(report, out: Path) -> Path:
    figure, axis = _figure()
    steps = np.arange(1, report.timesteps + 1)
    axis.plot(steps, 100 * np.asarray(report.accuracy_curve), marker=".", label="SNN")
    if report.ann_accuracy is not None:
        axis.axhline(100 * report.ann_accuracy, color="black", linestyle="--",
                     label=f"ANN ({100 * report.ann_accuracy:.2f} %)")
    axis.set_xlabel("time steps t (prediction from outputs 1..t)")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(f"Accuracy over time ({report.samples} samples)")
    axis.set_xscale("log", base=2)
    ticks = [t for t in 2 ** np.arange(0, 12) if t <= report.timesteps]
    axis.set_xticks(ticks, [str(t) for t in ticks])
    axis.set_ylim(0, 101)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="lower right")
    return _save(figure, out / "accuracy.png")


def firing_rate_plot(report, out: Path) -> Path:
    figure, axis = _figure()
    names = [_short(layer.node) for layer in report.layers]
    rates = [layer.firing_rate for layer in report.layers]
    axis.bar(names, rates, color="tab:orange")
    for index, rate in enumerate(rates):
        axis.annotate(f"{rate:.3f}", (index, rate), ha="center", va="bottom", fontsize=8)
    axis.set_ylabel("firing rate (spikes per neuron per step)")
    axis.set_xlabel("neuron layer (graph order)")
    axis.set_title(f"Firing rate per layer, T = {report.timesteps}")
    axis.set_ylim(0, max(1e-3, max(rates, default=0)) * 1.2)
    axis.tick_params(axis="x", rotation=30)
    return _save(figure, out / "firing_rates.png")


def sops_plot(report, out: Path) -> Path:
    figure, axis = _figure()
    names = [_short(layer.node) for layer in report.layers]
    positions = np.arange(len(names))
    axis.bar(positions - 0.2, [max(layer.sops, 1e-9) for layer in report.layers], 0.4,
             label=f"SNN synaptic operations (T = {report.timesteps})")
    axis.bar(positions + 0.2, [max(layer.ann_macs, 1e-9) for layer in report.layers], 0.4,
             label="ANN MACs")
    axis.set_xticks(positions, names, rotation=30)
    axis.set_yscale("log")
    axis.set_ylabel("operations per sample (log scale)")
    axis.set_xlabel("neuron layer, and the weighted layers it feeds")
    axis.set_title("Synaptic operations against ANN MACs")
    axis.legend()
    return _save(figure, out / "sops_vs_macs.png")


def scatter_plot(report, out: Path) -> Path:
    layers = [layer for layer in report.layers if layer.node in report.scatter]
    columns = min(3, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure, axes = _figure(4.0 * columns, 3.6 * rows, nrows=rows, ncols=columns, squeeze=False)
    for axis, layer in zip(axes.ravel(), layers):
        points = report.scatter[layer.node]
        axis.scatter(points[:, 0], points[:, 1], s=4, alpha=0.35)
        top = float(max(points.max(), 1e-6))
        axis.plot([0, top], [0, top], color="black", linewidth=0.8, label="y = x")
        axis.set_title(f"{_short(layer.node, 28)}  r = {layer.rate_vs_ann_r:.3f}"
                       if layer.rate_vs_ann_r is not None else _short(layer.node, 28),
                       fontsize=9)
        axis.set_xlabel("ANN activation")
        axis.set_ylabel("SNN rate × scale")
        axis.legend(loc="upper left", fontsize=8)
    for axis in axes.ravel()[len(layers):]:
        axis.set_visible(False)
    figure.suptitle(f"SNN output against ANN activation, T = {report.timesteps} (sampled)")
    return _save(figure, out / "rate_vs_ann.png")


#: Every file a report folder may hold.
REPORT_FILES = ("report.json", "report.md", "accuracy.png", "firing_rates.png",
                "sops_vs_macs.png", "rate_vs_ann.png")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def write_plots(report, out: Path) -> list[Path]:
    """The report's plots; no accuracy plot when nothing was scored."""
    plots = [accuracy_plot(report, out)] if report.accuracy_curve else []
    plots += [firing_rate_plot(report, out), sops_plot(report, out)]
    if report.scatter:
        plots.append(scatter_plot(report, out))
    return plots


def write_summary(report, plots: list[Path]) -> str:
    """report.md: the headline numbers, a table per layer, the outputs against the ANN
    (when compared), and the plots."""
    curve = report.accuracy_curve
    marks = [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256) if t <= report.timesteps]
    lines = [f"# Spiking network report (T = {report.timesteps}, {report.samples} samples)", ""]
    if report.ann_accuracy is not None:
        lines.append(f"- ANN accuracy: {100 * report.ann_accuracy:.2f} %")
    if curve:  # empty when nothing was scored (no labels or class scores)
        lines.append("- SNN accuracy: " + ", ".join(f"T={t}: {100 * curve[t - 1]:.2f} %"
                                                    for t in marks))
    lines += [
        f"- Synaptic operations per sample: {report.totals['sops']:.4g} against "
        f"{report.totals['ann_macs']:.4g} ANN MACs "
        f"(ratio {_ratio(report.totals['sop_mac_ratio'])})",
        f"- Energy per sample ({report.energy['precision']}, 45 nm): ANN "
        f"{report.energy['ann_pj'] / 1e6:.4g} µJ, SNN {report.energy['snn_pj'] / 1e6:.4g} µJ "
        f"(ratio {_ratio(report.totals['energy_ratio'])})",
        "", "| layer | neurons | firing rate | SOPs | ANN MACs fed | r (rate × scale vs ANN) |",
        "|---|---:|---:|---:|---:|---:|"]
    for layer in report.layers:
        r = "n/a" if layer.rate_vs_ann_r is None else f"{layer.rate_vs_ann_r:.3f}"
        lines.append(f"| {layer.node} | {layer.neurons} | {layer.firing_rate:.4f} | "
                     f"{layer.sops:.4g} | {layer.ann_macs} | {r} |")
    lines.append("")
    if report.fidelity:
        lines += _fidelity_markdown(report.fidelity)
    lines += [f"![{plot.stem}]({plot.name})" for plot in plots]
    return "\n".join(lines) + "\n"


def _fidelity_markdown(fidelity: dict[str, Any]) -> list[str]:
    """report.md's table of each output against the ANN (``SnnReport.fidelity``)."""
    def cell(value: float | None, percent: bool = False) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %" if percent else f"{value:.4f}"

    lines = ["", f"## Outputs against the ANN ({fidelity['samples']} samples)", "",
             "SNN output averaged over the first T steps, against the ANN's: relative error "
             "Σ|SNN − ANN| / Σ|ANN|, Pearson r, and argmax agreement along the last axis "
             "(equality for integer outputs).", "",
             "| output | T | rel. error | r | agreement |", "|---|---:|---:|---:|---:|"]
    for name, values in fidelity["outputs"].items():
        for t in fidelity["timesteps"]:
            lines.append(f"| {name} | {t} | {cell(values['error'][str(t)])} | "
                         f"{cell(values['correlation'][str(t)])} | "
                         f"{cell(values['agreement'][str(t)], True)} |")
    return [*lines, ""]

