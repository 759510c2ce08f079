"""A small Vision Transformer on scikit-learn's digits, converted to a spiking net.

Most of onnx-snn's examples convert ReLU networks. This one converts a network
with no ReLU at all, a tiny Vision Transformer (ViT), written in plain torch::

    patch embedding: Conv2d(1→32, kernel 2, stride 2)      8x8 image → 16 tokens
    + a learned class token and position embedding         17 tokens of width 32
    2 pre-norm blocks:  x + Attention(LayerNorm(x))        4 heads, softmax attention
                        x + MLP(LayerNorm(x))              Linear 32→64, GELU, Linear 64→32
    head: LayerNorm, the class token → Linear(32→10)

(about 18 k parameters). It is trained with AdamW on the 70 % training split
(one torch thread, seeded), exported with torch's dynamo exporter and converted
with the default settings, ``convert(ann, calibration_inputs)``:

- GELU, LayerNorm, Softmax and the two attention products (queries × keys,
  weights × values), whose inputs vary from step to step in the spiking net,
  become *time-difference ops*: each reads the running mean of its inputs, so
  its mean output over the steps so far is exactly the ANN's function of the
  mean inputs;
- every Linear (the attention's query, key, value and output projections, the
  MLP's two and the head) reads spikes from *signed* neurons (thresholds ±θ,
  spikes ±1), since what it reads (a LayerNorm, GELU or attention output) can
  be negative.

Ops that read only the input run once, as in the ANN: the patch embedding and
the first LayerNorm. The script prints what the conversion does to each op
(``inspect_model``, the listing of ``onnx-snn inspect``, tallied by op type),
then the ANN's and the SNN's accuracy on the test split at T = 1, 2, 4, ..., 64
(one spiking run at T = 64) as a markdown table.

Run it with ``python examples/beyond_relu.py`` (about 25 s on two cores: 9 s of
training, 6 s of spiking evaluation). Measured (seed 0, 30 epochs, 540 test
digits): ANN 95.7 %; SNN 10.9 % at T = 1, 86.3 % at T = 4, 95.7 % at T = 8 and
at T = 64.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from onnx_snn import convert
from onnx_snn.demo.digits import load_digits_split
from onnx_snn.export.torch import export_torch
from onnx_snn.graph.inspection import ModelInspection, inspect_model
from onnx_snn.measure.evaluation import ann_accuracy, snn_accuracy

TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
WIDTH = 32           # token width
HEADS = 4            # attention heads
HIDDEN = 64          # MLP width
DEPTH = 2            # transformer blocks
PATCH = 2            # patch size: (8 / PATCH)² = 16 tokens
EPOCHS = 30
CALIBRATION_SAMPLES = 200   # the first training digits calibrate the neurons


# --------------------------------------------------------------------------- network

class Attention(nn.Module):
    """Multi-head softmax self-attention on tokens [N, L, D]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, D] → [N, heads, L, D / heads]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self.split_heads(linear(x)) for linear in (self.q, self.k, self.v))
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)   # [N, H, L, L]
        return self.out((weights @ v).transpose(1, 2).flatten(2))              # [N, L, D]


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """The ViT of the module docstring: [N, 1, 8, 8] images → [N, 10] logits."""

    def __init__(self, dim: int = WIDTH, heads: int = HEADS, hidden: int = HIDDEN,
                 depth: int = DEPTH, patch: int = PATCH) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, (8 // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)                   # [N, 16, D]
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.position            # [N, 17, D]
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def train_vit(x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS, seed: int = 0
              ) -> VisionTransformer:
    """A ``VisionTransformer`` trained on ``(x, y)``, in eval mode: AdamW with a
    cosine schedule, label smoothing 0.1, shuffled batches of 64, one torch thread
    (deterministic, and as fast as two for so small a net)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = VisionTransformer()
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        order = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(inputs), generator=order).split(64):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(net(inputs[batch]), targets[batch],
                                                   label_smoothing=0.1)
                loss.backward()
                optimizer.step()
            schedule.step()
        return net.eval()
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- printing

#: How ``inspect_model`` says an op runs in the spiking net (the ``onnx-snn inspect``
#: listing has one line per node; this example tallies them by op type).
ACTIONS = {"analog": "runs once on the input", "td": "time-difference ops",
           "linear": "linear, on spikes"}


def conversion_summary(inspection: ModelInspection) -> str:
    """One line per kind of conversion with the op types it applies to, then the
    number of signed neurons, which the conversion adds in front of weighted layers."""
    lines = []
    for action, label in ACTIONS.items():
        ops = Counter(entry.op for entry in inspection.ops if entry.action == action)
        if ops:
            listed = ", ".join(f"{count} {op}" for op, count in sorted(ops.items()))
            lines.append(f"  {label:<24} {listed}")
    signed = sum(entry.action == "signed" for entry in inspection.ops)
    lines.append(f"  {'signed neurons':<24} {signed}, each in front of the weighted "
                 "layers that read a value that can be negative")
    return "\n".join(lines)


def accuracy_table(ann: float, curve: dict[int, float]) -> str:
    """Accuracy (%) against T as a markdown table, with the ANN in the last column."""
    return "\n".join([
        "| " + " | ".join(f"T={t}" for t in curve) + " | ANN |",
        "|" + "---:|" * (len(curve) + 1),
        "| " + " | ".join(f"{100 * a:.1f}" for a in curve.values()) + f" | {100 * ann:.1f} |"])


# --------------------------------------------------------------------------- demo

def main(epochs: int = EPOCHS, test_samples: int | None = None, seed: int = 0,
         timesteps: tuple[int, ...] = TIMESTEPS, echo: Callable[[str], None] = print
         ) -> dict[str, Any]:
    """Train, export, inspect, convert and evaluate; return the numbers.

    ``test_samples`` evaluates on the first that many test digits (all 540 by
    default). Returns ``{"ann_accuracy", "snn_accuracy": {T: accuracy}, "ann",
    "snn" (ModelProtos), "inspection" (``ModelInspection``), "parameters",
    "train_seconds", "convert_seconds", "eval_seconds"}``.
    """
    x_train, y_train, x_test, y_test = load_digits_split(seed=seed)
    x_test, y_test = x_test[:test_samples], y_test[:test_samples]

    start = time.perf_counter()
    network = train_vit(x_train, y_train, epochs, seed)
    train_seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in network.parameters())
    ann = export_torch(network, torch.from_numpy(x_train[:2]), dynamo=True)
    ann_score = ann_accuracy(ann, x_test, y_test)
    echo(f"ViT: {parameters} parameters, trained {epochs} epochs in {train_seconds:.1f} s; "
         f"ANN test accuracy {ann_score:.4f} on {len(y_test)} digits")

    inspection = inspect_model(ann)
    echo("what the conversion does (inspect_model, as `onnx-snn inspect` lists it):")
    echo(conversion_summary(inspection))

    start = time.perf_counter()
    snn = convert(ann, x_train[:CALIBRATION_SAMPLES], progress=False)
    convert_seconds = time.perf_counter() - start
    start = time.perf_counter()
    curve = snn_accuracy(snn.model, x_test, y_test, timesteps)
    eval_seconds = time.perf_counter() - start
    signed = sum(layer.neuron.signed for layer in snn.layers)
    echo(f"converted in {convert_seconds:.1f} s ({len(snn.layers)} neurons, {signed} signed), "
         f"evaluated up to T={max(timesteps)} in {eval_seconds:.1f} s")
    echo("")
    echo(accuracy_table(ann_score, curve))
    return {"ann_accuracy": ann_score, "snn_accuracy": curve, "ann": ann, "snn": snn.model,
            "inspection": inspection, "parameters": parameters,
            "train_seconds": train_seconds, "convert_seconds": convert_seconds,
            "eval_seconds": eval_seconds}


if __name__ == "__main__":
    main()
