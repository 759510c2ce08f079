"""A residual CNN on scikit-learn's digits, converted with both conversion presets.

The network is a small ResNet for 8x8 images::

    stem:   Conv3x3(1→C) → BN → ReLU → MaxPool(2)            8x8 → 4x4
    blocks: BLOCKS x [Conv3x3 → BN → ReLU → Conv3x3 → BN → (+ identity) → ReLU]
    head:   global average pooling → Linear(C→10)

so it has ``1 + 2·BLOCKS`` convolutions (7 by default), ``BLOCKS`` residual Adds
with the ReLU after the Add (as in ResNet), exactly one MaxPool, and BatchNorm
after every convolution (folded into the Conv by the exporter or by onnx-snn).

It is trained with Adam on the 70 % training split (one torch thread, seeded),
exported with the TorchScript exporter, and converted twice with calibration on
the training split in batches of 100:

- ``preset="spikingjelly"``: the classic per-layer conversion as SpikingJelly's
  ann2snn does it (one scale per Relu, threshold 1, soft reset, initial potential
  0, MaxPool kept over spikes, which warns);
- ``preset="best"``: per-channel thresholds from threshold balancing,
  half-threshold initial potential and the TD MaxPool, exact on rates (see
  ``onnx_snn.config.PRESETS`` for the exact settings).

Both SNNs are evaluated on the test split at T = 1, 2, 4, ..., 64 (one run at
T = 64 per model) and printed, with the ANN's accuracy, as a markdown table.

Run it with ``python examples/residual_digits.py`` (about 10 s on two cores: 6 s of
training, 2 s of spiking evaluation). Measured (seed 0, 30 epochs): ANN 99.4 %;
at T = 8, 94.4 % (spikingjelly) vs 99.3 % (best); at T = 64, 93.5 % vs 99.4 %.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx

from onnx_snn import convert
from onnx_snn.demo.digits import load_digits_split
from onnx_snn.export.torch import export_torch
from onnx_snn.measure.evaluation import ann_accuracy, snn_accuracy

PRESETS = ("spikingjelly", "best")
TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
WIDTH = 32      # channels of every convolution
BLOCKS = 3      # residual blocks: 1 + 2 * BLOCKS convolutions
EPOCHS = 30
CALIBRATION_BATCH = 100


# --------------------------------------------------------------------------- network

def residual_cnn(width: int = WIDTH, blocks: int = BLOCKS) -> Any:
    """The residual CNN described in the module docstring (a torch module)."""
    from torch import nn

    class BasicBlock(nn.Module):
        """Conv-BN-ReLU-Conv-BN, plus the identity, then ReLU (ResNet's basic block)."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.relu2 = nn.ReLU()

        def forward(self, x):
            out = self.relu1(self.bn1(self.conv1(x)))
            return self.relu2(self.bn2(self.conv2(out)) + x)

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        *[BasicBlock(width) for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def train_residual_cnn(x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS, seed: int = 0,
                       width: int = WIDTH, blocks: int = BLOCKS) -> Any:
    """Train ``residual_cnn`` with the digits CNN's recipe (``train_classifier``), seeded."""
    import torch

    from onnx_snn.demo.digits import train_classifier

    torch.manual_seed(seed)
    return train_classifier(residual_cnn(width, blocks), x, y, epochs, seed)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the (top-level) graph has."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# --------------------------------------------------------------------------- table

def markdown_table(ann: float, curves: dict[str, dict[int, float]],
                   timesteps: tuple[int, ...] = TIMESTEPS) -> str:
    """Accuracy (%) against T, one row per preset, with the ANN in the last column."""
    lines = ["| preset | " + " | ".join(f"T={t}" for t in timesteps) + " | ANN |",
             "|---|" + "---:|" * (len(timesteps) + 1)]
    for preset, curve in curves.items():
        lines.append(f"| {preset} | " + " | ".join(f"{100 * curve[t]:.1f}" for t in timesteps)
                     + f" | {100 * ann:.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- demo

def main(epochs: int = EPOCHS, seed: int = 0, timesteps: tuple[int, ...] = TIMESTEPS,
         presets: tuple[str, ...] = PRESETS, echo=print) -> dict[str, Any]:
    """Train, export, convert with each preset, evaluate; return the numbers.

    Returns ``{"ann_accuracy", "curves": {preset: {T: accuracy}}, "train_seconds",
    "convert_seconds": {preset: s}, "eval_seconds": {preset: s}, "ops": {op: count},
    "ann": ModelProto, "epochs", "timesteps"}``.
    """
    import torch

    x_train, y_train, x_test, y_test = load_digits_split(seed=seed)
    start = time.perf_counter()
    network = train_residual_cnn(x_train, y_train, epochs=epochs, seed=seed)
    train_seconds = time.perf_counter() - start
    ann = export_torch(network, torch.from_numpy(x_train[:2]), dynamo=False)
    results: dict[str, Any] = {
        "ann_accuracy": ann_accuracy(ann, x_test, y_test), "train_seconds": train_seconds,
        "epochs": epochs, "timesteps": list(timesteps), "ops": op_counts(ann), "ann": ann,
        "curves": {}, "convert_seconds": {}, "eval_seconds": {}}
    ops = results["ops"]
    echo(f"residual CNN: {ops.get('Conv', 0)} Conv, {ops.get('Add', 0)} Add, "
         f"{ops.get('MaxPool', 0)} MaxPool; trained {epochs} epochs in {train_seconds:.1f} s; "
         f"ANN test accuracy {results['ann_accuracy']:.4f}")

    for preset in presets:
        start = time.perf_counter()
        snn = convert(ann, x_train, preset=preset, batch_size=CALIBRATION_BATCH, progress=False)
        results["convert_seconds"][preset] = time.perf_counter() - start
        start = time.perf_counter()
        results["curves"][preset] = snn_accuracy(snn.model, x_test, y_test, timesteps)
        results["eval_seconds"][preset] = time.perf_counter() - start
        echo(f"{preset}: converted in {results['convert_seconds'][preset]:.1f} s, "
             f"evaluated (T={max(timesteps)}) in {results['eval_seconds'][preset]:.1f} s")

    echo("")
    echo(markdown_table(results["ann_accuracy"], results["curves"], tuple(timesteps)))
    return results


if __name__ == "__main__":
    main()
