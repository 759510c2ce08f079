"""Accuracy against T of a small ViT converted by onnx-snn and by SpikingJelly 2.0.

The net: the ViT of ``tests/beyond_relu_models.py`` (patch embedding Conv2d(1, 32,
2, stride 2) -> 16 tokens, a learned class token and position embedding, two
pre-norm blocks with 4-head softmax attention and a GELU MLP 32-64-32, LayerNorm,
the class token -> Linear; 18.2k parameters) with one change: its attention keeps
the batch axis first ([N, L, D] throughout; heads by reshape to [N, L, H, d] and
permute(0, 2, 1, 3), as SpikingJelly's BERT example writes it) instead of moving
to [L, N, D]; same parameters, same maths. It is trained as ``train_net('vit')``
trains the tests' ViT, from the same initial weights on the same batches (one
torch thread, ``torch.manual_seed(0)``, AdamW lr 3e-3, weight decay 0.05, label
smoothing 0.1, cosine schedule over 20 epochs, batches of 64 shuffled by a
generator seeded 0), on scikit-learn's digits (``digits_data('vit')``: 70/30
stratified split, random_state=0; 1257 training and 540 test images
[N, 1, 8, 8] in [0, 1]).

Rows: accuracy (%) on the first ``--test-samples`` (default all 540) test digits
against the true labels. ``T=t``: the argmax of the sum of the outputs of steps
1..t (the same argmax as that of their mean), all t from one run of 64 steps.
``ANN``: the unconverted net on the same digits (for onnx-snn the exported ONNX
file in onnxruntime, for SpikingJelly the torch module it converts).
``export s``, ``convert s``, ``eval s``: wall times of the export to ONNX, of the
conversion and of the scoring at T = 64 (ANN accuracy not included).

- onnx-snn: ``export_torch(module, sample, dynamo=True)`` and ``dynamo=False``
  (TorchScript), ``convert(ann, calibration, progress=False)`` (default settings;
  calibration: the first 200 training inputs), scored by
  ``snn_accuracy(model.model, x, y, [1, 2, 4, ..., 64], batch_size=100)`` (direct
  encoding: the input at every step). Once for the whole ViT (image input) and
  once for its encoder alone (input: the tokens its embedding computes, i.e. the
  module SpikingJelly converts, calibrated on the tokens of the same 200 inputs).
- SpikingJelly: ``Converter(TransformerTDEquivalentRecipe(time_steps=64),
  device='cpu').convert(module)``. The recipe takes no calibration data (it
  inserts no observers, sets no thresholds; ``time_steps`` is only stored on the
  result): it swaps Linear, Conv2d, LayerNorm, GELU, Softmax, matmul (among others)
  for temporal-difference (TD) operators, which at step t apply the ANN operator to
  the sum of their inputs over steps 1..t and emit the change of its result:
  floating-point values, not spikes. Run as its BERT example does
  (``ann2snn/examples/bert_sst2_transformer_td_equivalent.py``):
  ``set_step_mode(snn, 'm')``, ``reset_net``, the input at step 1 and zeros
  after, batches of 100; the module converted is the encoder, fed the tokens the
  ANN's embedding computes (that example's "embedding-output conversion boundary"),
  since no whole-ViT form converts into an equivalent SNN (below). Two more rows:
  the same encoder with the input at every step (direct encoding, as onnx-snn is
  fed), and the whole ViT run step by step (``set_step_mode(snn, 's')``, one step
  of [N, 1, 8, 8] at a time), which runs but is not equivalent.

Then, for each ViT form tried in SpikingJelly (the first 100 test digits, the
input at step 1 and zeros after, 64 steps, the form's own torch output as
reference): the exception (type and first line) of the conversion or of the run,
or else max|sum of outputs 1..t - ANN| / max|ANN| at t = 1, 2, 64. With
SpikingJelly 2.0.0: the tests' ViT fails to convert (its permute(1, 0, 2) moves
the batch axis); with batch-first attention the class token's ``expand`` fails in
multi-step mode, and slicing the position embedding (mean pooling, no class
token) fails there too; the forms that run but add a class token or position
embedding outside a TD operator add it again at every step and drift from the
ANN after step 1; without position embedding the conversion is exact but the ANN
is poor. The mean-pooled forms reuse the trained net's weights (their own
accuracy is not the point) except the one without position embedding, trained
like the ViT.

    python benchmarks/compare_spikingjelly_vit.py [--test-samples 540] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from choices import backend

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/beyond_relu_models.py (tests/ is not a package)

try:
    import torch
    from spikingjelly.activation_based import ann2snn, functional
    from torch import nn
except ImportError as missing:
    sys.exit(f"spikingjelly is not importable ({missing}); "
             "install it with: pip install --no-deps spikingjelly==2.0.0 loguru")

import beyond_relu_models as brm  # from TESTS, put on sys.path above

TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
EVAL_BATCH = 100
FORM_SAMPLES = 100
DEVIATION_AT = (1, 2, 64)


# --------------------------------------------------------------------------- nets

class BatchFirstAttention(brm.Attention):
    """The tests' attention (same parameters and maths) on [N, L, D] without moving
    the batch axis."""

    def forward(self, x):
        n, length, dim = x.shape
        q, k, v = (self.heads_first(self.q(x)), self.heads_first(self.k(x)),
                   self.heads_first(self.v(x)))
        weights = self.softmax((q @ k.transpose(-2, -1)) * self.scale)   # [N, H, L, L]
        return self.out((weights @ v).permute(0, 2, 1, 3).reshape(n, length, dim))

    def heads_first(self, x):
        """[N, L, D] -> [N, H, L, d]."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).permute(0, 2, 1, 3)


class ViT(brm.ViT):
    """The tests' ViT with BatchFirstAttention, its embedding (image -> tokens [N, 17, D]:
    class token and patches, + position embedding) a method of its own."""

    def __init__(self) -> None:
        super().__init__()
        for block in self.blocks:  # same parameters and initialisation, new forward
            block.attn.__class__ = BatchFirstAttention

    def embed(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)              # [N, 16, D]
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), patches], dim=1) + self.pos

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x)))[:, 0])


class Encoder(nn.Module):
    """A ViT after its embedding: tokens [N, 17, D] -> logits (shares its modules)."""

    def __init__(self, vit: ViT) -> None:
        super().__init__()
        self.blocks, self.norm, self.head = vit.blocks, vit.norm, vit.head

    def forward(self, tokens):
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class MeanPooledViT(nn.Module):
    """A ViT without class token: patch embedding, blocks, norm, mean over the tokens,
    head. ``position``: "sliced" adds the ViT's ``pos[:, 1:]``, "own" a copy of it as
    a [1, 16, D] parameter of its own, "none" nothing."""

    def __init__(self, vit: ViT, position: str) -> None:
        super().__init__()
        self.vit, self.position = vit, position
        if position == "own":
            self.pos = nn.Parameter(vit.pos[:, 1:].detach().clone())

    def forward(self, x):
        tokens = self.vit.patch(x).flatten(2).transpose(1, 2)
        if self.position == "sliced":
            tokens = tokens + self.vit.pos[:, 1:]
        elif self.position == "own":
            tokens = tokens + self.pos
        return self.vit.head(self.vit.norm(self.vit.blocks(tokens)).mean(dim=1))


def train(make: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray) -> nn.Module:
    """``make()`` trained as ``brm.train_net('vit')`` trains the tests' ViT, in eval mode."""
    return brm.train_with(make, brm.RECIPES["vit"], x, y)


def logits(module: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return module(torch.from_numpy(x))


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((logits(module, x).argmax(-1).numpy() == y).mean())


def failure(error: Exception) -> str:
    """``Type: first line of the message``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# --------------------------------------------------------------------------- onnx-snn

def onnx_snn_row(module: nn.Module, calibration: np.ndarray, x: np.ndarray, y: np.ndarray,
                 dynamo: bool) -> dict[str, Any]:
    """Export, convert with default settings and score ``module``; a failure is a row."""
    import onnx_snn
    from onnx_snn.export.torch import export_torch
    from onnx_snn.measure.evaluation import ann_accuracy, snn_accuracy

    row: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        ann = export_torch(module, torch.from_numpy(x[:2]), dynamo=dynamo)
        exported = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snn = onnx_snn.convert(ann, calibration, progress=False)
            converted = time.perf_counter()
            row["accuracy"] = snn_accuracy(snn.model, x, y, list(TIMESTEPS),
                                           batch_size=EVAL_BATCH)
        row.update(export_s=exported - started, convert_s=converted - exported,
                   eval_s=time.perf_counter() - converted,
                   ann=ann_accuracy(ann, x, y, batch_size=EVAL_BATCH))
    except Exception as error:  # noqa: BLE001 - a failing conversion is a row, not a stop
        row["failed"] = failure(error)
    return row


# --------------------------------------------------------------------------- SpikingJelly

def sj_convert(module: nn.Module) -> nn.Module:
    recipe = ann2snn.TransformerTDEquivalentRecipe(time_steps=TIMESTEPS[-1])
    return ann2snn.Converter(recipe, device="cpu").convert(copy.deepcopy(module).eval())


def sj_outputs(snn: nn.Module, x: np.ndarray, mode: str, every_step: bool) -> torch.Tensor:
    """Outputs [T, N, classes] of steps 1..TIMESTEPS[-1] for one batch, from a reset net:
    the input at every step, or at step 1 and zeros after; one multi-step call ('m') or
    one call per step ('s')."""
    inputs = torch.from_numpy(x)
    sequence = inputs.expand(TIMESTEPS[-1], *inputs.shape).clone()
    if not every_step:
        sequence[1:] = 0
    functional.set_step_mode(snn, mode)
    functional.reset_net(snn)
    # torch.fx prints the traceback of an exception in a traced module before raising it
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        return snn(sequence) if mode == "m" else torch.stack([snn(step) for step in sequence])


def sj_accuracy(snn: nn.Module, x: np.ndarray, y: np.ndarray, mode: str,
                every_step: bool) -> dict[int, float]:
    """Accuracy after each T of TIMESTEPS: argmax of the sum of outputs 1..T."""
    correct = np.zeros(len(TIMESTEPS))
    for start in range(0, len(x), EVAL_BATCH):
        batch = slice(start, start + EVAL_BATCH)
        running = sj_outputs(snn, x[batch], mode, every_step).cumsum(0)
        correct += [(running[t - 1].argmax(-1).numpy() == y[batch]).sum() for t in TIMESTEPS]
    return {t: float(c) / len(x) for t, c in zip(TIMESTEPS, correct)}


def sj_row(module: nn.Module, x: np.ndarray, y: np.ndarray, mode: str,
           every_step: bool) -> dict[str, Any]:
    """Convert ``module`` and score it; a failure is a row."""
    row: dict[str, Any] = {"ann": accuracy(module, x, y)}
    try:
        started = time.perf_counter()
        snn = sj_convert(module)
        converted = time.perf_counter()
        row["accuracy"] = sj_accuracy(snn, x, y, mode, every_step)
        row.update(convert_s=converted - started, eval_s=time.perf_counter() - converted)
    except Exception as error:  # noqa: BLE001
        row["failed"] = failure(error)
    return row


def sj_form(module: nn.Module, x: np.ndarray, mode: str) -> str:
    """What SpikingJelly does with ``module``: the conversion's or the run's exception,
    or the deviation of the summed outputs (input at step 1, zeros after) from the ANN."""
    try:
        snn = sj_convert(module)
    except Exception as error:  # noqa: BLE001
        return f"conversion fails: {failure(error)}"
    try:
        running = sj_outputs(snn, x, mode, every_step=False).cumsum(0)
    except Exception as error:  # noqa: BLE001
        return f"converts; the run ('{mode}') fails: {failure(error)}"
    reference = logits(module, x)
    scale = float(reference.abs().max())
    return f"converts and runs ('{mode}'); max|sum of outputs 1..t - ANN| / max|ANN| = " + \
        ", ".join(f"{float((running[t - 1] - reference).abs().max()) / scale:.1e} (t={t})"
                  for t in DEVIATION_AT)


def sj_forms(net: ViT, no_position: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, str]:
    """Each ViT form tried -> what SpikingJelly does with it (first FORM_SAMPLES of x)."""
    tests_vit = brm.ViT().eval()
    tests_vit.load_state_dict(net.state_dict())  # same parameter names: the same weights
    sample = x[:FORM_SAMPLES]
    with torch.no_grad():
        tokens = net.embed(torch.from_numpy(sample)).numpy()
    return {
        "tests' ViT ([L, N, D] attention)": sj_form(tests_vit, sample, "m"),
        "batch-first attention, class token, multi-step": sj_form(net, sample, "m"),
        "batch-first attention, class token, step by step": sj_form(net, sample, "s"),
        "mean pooling, no class token, position embedding pos[:, 1:]":
            sj_form(MeanPooledViT(net, "sliced").eval(), sample, "m"),
        "mean pooling, no class token, position embedding its own [1, 16, D] parameter":
            sj_form(MeanPooledViT(net, "own").eval(), sample, "m"),
        f"mean pooling, no position embedding (trained; ANN "
        f"{100 * accuracy(no_position, x, y):.1f} %)": sj_form(no_position, sample, "m"),
        "encoder, tokens from the ANN's embedding (as in the table)":
            sj_form(Encoder(net).eval(), tokens, "m"),
    }


# --------------------------------------------------------------------------- report

def print_table(rows: list[dict[str, Any]]) -> None:
    print("| tool | exporter/mode | ANN | " + " | ".join(f"T={t}" for t in TIMESTEPS)
          + " | export s | convert s | eval s |")
    print("|---|---|" + "---:|" * (len(TIMESTEPS) + 4))
    for row in rows:
        head = f"| {row['tool']} | {row['mode']} |"
        if "failed" in row:
            print(f"{head} failed: {row['failed'].replace('|', '/')} |"
                  + " |" * (len(TIMESTEPS) + 3))
            continue
        export = f"{row['export_s']:.1f}" if "export_s" in row else "-"
        print(f"{head} {100 * row['ann']:.1f} | "
              + " | ".join(f"{100 * a:.1f}" for a in row["accuracy"].values())
              + f" | {export} | {row['convert_s']:.1f} | {row['eval_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-samples", type=int, default=540,
                        help="test inputs scored: the first N (default all 540)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.test_samples < 1:
        sys.exit("--test-samples must be at least 1")

    from importlib.metadata import version

    import onnxruntime

    import onnx_snn

    started = time.perf_counter()
    x_train, y_train, x_test, y_test = brm.digits_data("vit")
    x, y = x_test[:args.test_samples], y_test[:args.test_samples]
    calibration = x_train[:brm.CALIB]
    net = train(ViT, x_train, y_train)
    no_position = train(lambda: MeanPooledViT(ViT(), "none"), x_train, y_train)
    encoder = Encoder(net).eval()
    with torch.no_grad():
        tokens, calibration_tokens = (net.embed(torch.from_numpy(a)).numpy()
                                      for a in (x, calibration))

    rows = []
    for part, module, data, calib in (("whole ViT", net, x, calibration),
                                      ("encoder", encoder, tokens, calibration_tokens)):
        for exporter in ("dynamo", "torchscript"):
            row = onnx_snn_row(module, calib, data, y, dynamo=exporter == "dynamo")
            rows.append({"tool": "onnx-snn", "mode": f"{exporter}, {part}", **row})
            print(f"  {rows[-1]['mode']}: done", flush=True)
    for mode_name, module, data, mode, every_step in (
            ("'m', encoder, input at step 1 then zeros (as its BERT example)",
             encoder, tokens, "m", False),
            ("'m', encoder, input at every step", encoder, tokens, "m", True),
            ("'s' step by step, whole ViT, input at step 1 then zeros (not equivalent)",
             net, x, "s", False)):
        rows.append({"tool": "SpikingJelly TD", "mode": mode_name,
                     **sj_row(module, data, y, mode, every_step)})
        print(f"  {mode_name}: done", flush=True)
    forms = sj_forms(net, no_position, x, y)

    command = " ".join(["python", "benchmarks/compare_spikingjelly_vit.py", *sys.argv[1:]])
    versions = (f"onnx_snn {onnx_snn.__version__} from {Path(onnx_snn.__file__).parent} "
                f"(IFNode backend: {backend()}), "
                f"SpikingJelly {version('spikingjelly')}, torch {torch.__version__}, "
                f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}, "
                f"{torch.get_num_threads()} torch threads")
    wall = time.perf_counter() - started
    print()
    print(f"Accuracy (%) against T on {len(x)} digits test inputs of a ViT "
          f"({brm.parameter_count(net)} parameters) converted by onnx-snn (default settings, "
          f"direct encoding) and by SpikingJelly's TransformerTDEquivalentRecipe; "
          f"`{command}`; {versions}; {wall:.0f} s in all.")
    print()
    print_table(rows)
    print()
    print(f"SpikingJelly on each ViT form tried ({len(x[:FORM_SAMPLES])} test digits, "
          f"input at step 1 then zeros, {TIMESTEPS[-1]} steps):")
    for form, outcome in forms.items():
        print(f"- {form}: {outcome}")
    if args.json:
        args.json.write_text(json.dumps(
            {"command": command, "versions": versions, "timesteps": list(TIMESTEPS),
             "samples": len(x), "wall_s": wall, "rows": rows, "forms": forms}, indent=2))


if __name__ == "__main__":
    main()
