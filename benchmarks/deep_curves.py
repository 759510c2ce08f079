"""Accuracy against T for deeper CIFAR-style nets (ResNet-20, VGG-11-BN, MobileNetV2).

The data (10 classes, float32 [N, 3, 32, 32] in [0, 1], all seeded):

- scikit-learn's digits, split 70/30 stratified with ``random_state=0`` (the split
  of ``onnx_snn.demo.digits.load_digits_split``: 1257 training, 540 test digits);
- each 8x8 digit (/16) is upsampled to 32x32 (bilinear, ``align_corners=False``)
  and warped by a random affine map (``affine_grid`` + ``grid_sample``, zeros
  outside): rotation, isotropic scale and shift; it is then tiled to 3 channels,
  each with its own gain and background offset (so the channels differ), plus
  Gaussian noise, clipped to [0, 1];
- training set: ``TRAIN_COPIES`` = 5 augmented copies of every training digit
  (6285 images; rotation +-15 deg, scale 0.85-1.15, shift +-3 px, gains
  U(0.4, 1), offsets U(0, 0.15), noise sigma 0.05; seed 1), shuffled once;
- test set: one milder, deterministic copy of each held-out digit (540 images;
  rotation +-10 deg, scale 0.9-1.1, shift +-2 px, gains U(0.5, 1), offsets
  U(0, 0.1), noise sigma 0.03; seed 2);
- calibration: the first 500 (shuffled) training images, never the test set.

The nets, in plain torch (no torchvision), each with distinct ReLU modules so that
SpikingJelly's FX converter sees every activation:

- ``resnet20``: CIFAR ResNet-20 (conv3x3-16, 3 stages x 3 BasicBlocks of widths
  16/32/64, BN, ReLU after the residual Add, 1x1-conv + BN shortcut where the shape
  changes, global average pool, Linear); 19 ReLUs, 0.27 M parameters.
- ``vgg11``: VGG-11 with BatchNorm and MaxPool, CIFAR layout, at HALF the usual
  widths ([32, M, 64, M, 128, 128, M, 256, 256, M, 256, 256, M], then Linear 256
  -> 10): the full widths cost about 4x the time to train and to simulate at
  T = 128 on 2 CPU cores. Every MaxPool follows a ReLU.
- ``mobilenetv2``: a small MobileNetV2 (stem conv3x3-32, inverted residuals
  (t, c, n, s) = (1,16,1,1), (6,24,2,2), (6,32,2,2), (6,64,2,2), (6,96,1,1) with
  depthwise convs, ReLU6 and linear bottlenecks, conv1x1-256, global average pool,
  Linear).

Training (``--threads`` torch threads, 2 by default): Adam (lr 3e-3, weight decay
1e-4) with a cosine schedule, batches of 64, cross-entropy, seed 0, ``EPOCHS`` per
net. The trained net is exported with ``export_torch(..., dynamo=False)`` and
cached with its state dict and the data under ``--cache`` (default
``~/.cache/onnx-snn/deep``); later runs skip training unless ``--retrain``, or the
cached recipe (epochs, data version) differs.

Evaluation: each setting of ``SETTINGS`` (keyword arguments of ``convert``) is
converted with the calibration images in batches of 100 and scored on the test set
at T = 1, 2, 4, ..., ``--max-t`` from one ``snn_accuracy`` run at the largest T.
When ``import spikingjelly`` works, SpikingJelly 2.0's ann2snn ``Converter`` runs
the recipes of ``SPIKINGJELLY_SETTINGS`` on the same torch net, the same
calibration batches and test images, and its torch SNN is stepped T times (rows
named ``SJ ...``). SpikingJelly only converts modules whose type is exactly
``nn.ReLU``, so nets with ReLU6 (mobilenetv2) get no SpikingJelly rows.

Prints a markdown table (accuracy in %: net | setting | ANN | T=1 ... | convert s |
eval s) and the wall time per net; ``--json FILE`` writes the same numbers.

    python benchmarks/deep_curves.py [--nets resnet20,vgg11,mobilenetv2]
        [--settings NAME,...] [--test-samples N] [--max-t 128] [--retrain]
        [--cache DIR] [--json FILE] [--no-spikingjelly] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from choices import pick
from torch import nn
from torch.nn import functional as F

from onnx_snn import HookFactory, NeuronFactory

#: Version of the data recipe and training loop: a cache with another version is rebuilt.
RECIPE_VERSION = 1
SEED = 0
TIMESTEPS = (1, 2, 4, 8, 16, 32, 64, 128)
CALIBRATION_SAMPLES = 500
CALIBRATION_BATCH = 100
TRAIN_COPIES = 5
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
#: Training epochs per net (measured to stay within ~10 min each on 2 cores).
EPOCHS = {"resnet20": 10, "vgg11": 10, "mobilenetv2": 10}
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
    / "onnx-snn" / "deep"

#: onnx-snn rows: name -> keyword arguments of ``convert`` (batch_size defaults to 100).
SETTINGS: dict[str, dict[str, Any]] = {
    "spikingjelly": {"preset": "spikingjelly"},
    "spikingjelly-99.9%": {"preset": "spikingjelly", "hook_factory": HookFactory("99.9%")},
    "best": {"preset": "best"},
    "auto (target T=4)": {"preset": "auto", "target_timesteps": 4},
    "best + burst B=4": {"preset": "best", "neuron_factory": NeuronFactory(v_init=0.5,
                                                                            max_spikes=4)},
    "per-channel 99.9% + v_init 0.5 + maxpool before": {
        "hook_factory": HookFactory("99.9%", per_channel=True),
        "neuron_factory": NeuronFactory(v_init=0.5), "maxpool": "before"},
}


def batches(x: np.ndarray, size: int = CALIBRATION_BATCH) -> list:
    """Calibration batches for SpikingJelly: a list of torch tensors of ``size`` images."""
    return [torch.from_numpy(x[i:i + size]) for i in range(0, len(x), size)]


def _sj_rate_coding(**options: Any) -> Callable[[Any, np.ndarray], Any]:
    return lambda ann2snn, x: ann2snn.RateCodingRecipe(batches(x), momentum=0.1, **options)


def _sj_balancing(size: int) -> Callable[[Any, np.ndarray], Any]:
    return lambda ann2snn, x: (ann2snn.LocalThresholdBalancingRecipe(batches(x, size))
                               if hasattr(ann2snn, "LocalThresholdBalancingRecipe") else None)


#: SpikingJelly rows: name -> (its ann2snn module, calibration images) -> recipe, or None
#: when the installed version lacks it. RateCoding Max / 99.9% / channel-wise mirror the
#: first, second and fourth onnx-snn rows. LocalThresholdBalancing updates each
#: threshold once per batch (θ += 2·mean((x − θ)⁺) from θ = 0), so it gets a row with
#: batches of 10 (50 updates) beside the one with batches of 100 (5 updates).
SPIKINGJELLY_SETTINGS: dict[str, Callable[[Any, np.ndarray], Any]] = {
    "SJ RateCoding Max": _sj_rate_coding(mode="Max"),
    "SJ RateCoding 99.9%": _sj_rate_coding(mode="99.9%"),
    "SJ RateCoding channel-wise 99.9% + half threshold + pre-spike maxpool":
        _sj_rate_coding(mode="99.9%", channel_wise=True, half_threshold=True,
                        pre_spike_maxpool=True),
    "SJ LocalThresholdBalancing": _sj_balancing(CALIBRATION_BATCH),
    "SJ LocalThresholdBalancing (batches of 10)": _sj_balancing(10),
}


# --------------------------------------------------------------------------- data

def _augment(images: np.ndarray, copies: int, seed: int, rotation: float, scale: float,
             shift: float, gain: float, offset: float, noise: float) -> np.ndarray:
    """``copies`` augmented [3, 32, 32] versions of every 8x8 image in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.tile(images, (copies, 1, 1))).float()[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    n = len(x)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    angle = uniform(-rotation, rotation) * math.pi / 180
    zoom = uniform(1 - scale, 1 + scale)
    move = uniform(-shift, shift, 2) * 2 / 32          # pixels -> normalised coordinates
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1),
                         torch.stack([sin, cos, move[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, 32, 32], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = x * uniform(gain, 1.0, 3, 1, 1) + uniform(0.0, offset, 3, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1).numpy().astype(np.float32)


def make_data() -> dict[str, np.ndarray]:
    """The training and test sets of the module docstring."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    train_img, test_img, train_y, test_y = train_test_split(
        images, labels, test_size=0.3, random_state=0, stratify=labels)
    x_train = _augment(train_img, TRAIN_COPIES, seed=1, rotation=15, scale=0.15, shift=3,
                       gain=0.4, offset=0.15, noise=0.05)
    y_train = np.tile(train_y, TRAIN_COPIES)
    order = np.random.default_rng(SEED).permutation(len(x_train))
    x_test = _augment(test_img, 1, seed=2, rotation=10, scale=0.1, shift=2, gain=0.5,
                      offset=0.1, noise=0.03)
    return {"x_train": x_train[order], "y_train": y_train[order], "x_test": x_test,
            "y_test": test_y}


def load_data(cache: Path, retrain: bool) -> dict[str, np.ndarray]:
    path = cache / f"data-v{RECIPE_VERSION}.npz"
    if path.is_file() and not retrain:
        with np.load(path) as stored:
            return {key: stored[key] for key in stored.files}
    data = make_data()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **data)
    return data


# --------------------------------------------------------------------------- nets

def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> list:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c_in, c_out, 3, stride), nn.ReLU(),
                                  *conv_bn(c_out, c_out))
        self.shortcut = nn.Sequential() if stride == 1 and c_in == c_out \
            else nn.Sequential(*conv_bn(c_in, c_out, 1, stride))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 3,
                 classes: int = 10) -> None:
        super().__init__()
        layers, c_in = [*conv_bn(3, widths[0]), nn.ReLU()], widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks):
                layers.append(BasicBlock(c_in, width, 2 if stage and not block else 1))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VGG11(nn.Module):
    FULL = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, width: float = 0.5, classes: int = 10) -> None:
        super().__init__()
        layers, c_in = [], 3
        for item in self.FULL:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = int(item * width)
                layers += [*conv_bn(c_in, c_out), nn.ReLU()]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers = [] if expand == 1 else [*conv_bn(c_in, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
                   *conv_bn(hidden, c_out, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    CONFIG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(self, stem: int = 32, last: int = 256, classes: int = 10) -> None:
        super().__init__()
        layers, c_in = [*conv_bn(3, stem), nn.ReLU6()], stem
        for expand, c_out, repeats, stride in self.CONFIG:
            for index in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if index == 0 else 1, expand))
                c_in = c_out
        layers += [*conv_bn(c_in, last, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


NETS: dict[str, Callable[[], nn.Module]] = {
    "resnet20": ResNet20, "vgg11": VGG11, "mobilenetv2": MobileNetV2,
}


# --------------------------------------------------------------------------- training

def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> nn.Module:
    """Adam + cosine, batches of BATCH, cross-entropy (the module docstring)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * math.ceil(len(x) / BATCH)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        started, total = time.perf_counter(), 0.0
        for index in torch.randperm(len(inputs), generator=generator).split(BATCH):
            optimizer.zero_grad()
            loss = F.cross_entropy(net(inputs[index]), targets[index])
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        print(f"    epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return net.eval()


def trained_net(name: str, data: dict, cache: Path, retrain: bool, epochs: int) -> dict:
    """{"net", "ann" (ONNX ModelProto), "meta"}: from the cache, or trained now."""
    import onnx

    from onnx_snn.export import export_torch

    onnx_path, state_path = cache / f"{name}.onnx", cache / f"{name}.pt"
    meta_path = cache / f"{name}.json"
    recipe = {"version": RECIPE_VERSION, "epochs": epochs, "seed": SEED, "lr": LR,
              "batch": BATCH, "weight_decay": WEIGHT_DECAY, "train_copies": TRAIN_COPIES}
    torch.manual_seed(SEED)
    net = NETS[name]()
    if not retrain and onnx_path.is_file() and state_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == recipe:
            net.load_state_dict(torch.load(state_path, weights_only=True))
            print(f"  {name}: cached in {cache} (trained in {meta['training_s']:.0f} s)")
            return {"net": net.eval(), "ann": onnx.load(onnx_path), "meta": meta}
        print(f"  {name}: cached recipe differs, training again")
    print(f"  {name}: training {epochs} epochs on {len(data['x_train'])} images, "
          f"{torch.get_num_threads()} threads", flush=True)
    started = time.perf_counter()
    net = train(net, data["x_train"], data["y_train"], epochs, SEED)
    elapsed = time.perf_counter() - started
    ann = export_torch(net, torch.from_numpy(data["x_train"][:2]), dynamo=False)
    cache.mkdir(parents=True, exist_ok=True)
    onnx.save(ann, onnx_path)
    torch.save(net.state_dict(), state_path)
    meta = {"recipe": recipe, "training_s": elapsed,
            "parameters": sum(p.numel() for p in net.parameters())}
    meta_path.write_text(json.dumps(meta, indent=2))
    print(f"  {name}: trained in {elapsed:.0f} s")
    return {"net": net, "ann": ann, "meta": meta}


# --------------------------------------------------------------------------- evaluation

def onnx_snn_curve(ann: Any, options: dict, calibration: np.ndarray, x: np.ndarray,
                   y: np.ndarray, timesteps: list[int], eval_batch: int) -> dict:
    from onnx_snn import convert
    from onnx_snn.measure.evaluation import snn_accuracy

    options = {"batch_size": CALIBRATION_BATCH, **options}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "MaxPool kept over spikes" with maxpool="keep"
        snn = convert(ann, calibration, progress=False, **options)
    converted = time.perf_counter()
    accuracy = snn_accuracy(snn.model, x, y, timesteps, batch_size=eval_batch)
    return {"accuracy": accuracy, "convert_s": converted - started,
            "eval_s": time.perf_counter() - converted}


def spikingjelly_curve(net: nn.Module, make_recipe: Callable, calibration: np.ndarray,
                       x: np.ndarray, y: np.ndarray, timesteps: list[int],
                       eval_batch: int) -> dict | None:
    from spikingjelly.activation_based import ann2snn, functional

    recipe = make_recipe(ann2snn, calibration)
    if recipe is None:
        return None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = ann2snn.Converter(recipe, device="cpu").convert(copy.deepcopy(net).eval())
    converted = time.perf_counter()
    correct = np.zeros(len(timesteps), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(x), eval_batch):
            batch = torch.from_numpy(x[start:start + eval_batch])
            labels = torch.from_numpy(y[start:start + eval_batch])
            functional.reset_net(snn)
            total, t_index = 0, 0
            for step in range(1, timesteps[-1] + 1):
                total = total + snn(batch)
                if step == timesteps[t_index]:
                    correct[t_index] += int((total.argmax(-1) == labels).sum())
                    t_index += 1
    return {"accuracy": {t: float(c) / len(x) for t, c in zip(timesteps, correct)},
            "convert_s": converted - started, "eval_s": time.perf_counter() - converted}


def spikingjelly_available() -> str | None:
    """None when SpikingJelly's ann2snn imports, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from spikingjelly.activation_based import ann2snn, functional  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means "skip"
        return f"{type(error).__name__}: {error}"
    return None


def timesteps_up_to(max_t: int) -> list[int]:
    steps = [t for t in TIMESTEPS if t <= max_t]
    return steps if steps and steps[-1] == max_t else steps + [max_t]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", help=f"comma-separated, from {','.join(NETS)} (default all)")
    parser.add_argument("--settings", help="comma-separated setting names (default all): "
                        + "; ".join([*SETTINGS, *SPIKINGJELLY_SETTINGS]).replace("%", "%%"))
    parser.add_argument("--test-samples", type=int, help="score only the first N test images")
    parser.add_argument("--max-t", type=int, default=TIMESTEPS[-1],
                        help=f"largest T (default {TIMESTEPS[-1]})")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"trained nets and data (default {DEFAULT_CACHE})")
    parser.add_argument("--retrain", action="store_true", help="ignore the cache")
    parser.add_argument("--epochs", type=int, help="override the epochs of every net")
    parser.add_argument("--no-spikingjelly", action="store_true",
                        help="skip the SpikingJelly rows")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--eval-batch", type=int, default=50,
                        help="images per SNN run (memory grows with T x batch; default 50)")
    parser.add_argument("--sj-batch", type=int, default=100,
                        help="images per SpikingJelly run (steps run one by one; default 100)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    nets = pick(args.nets, list(NETS), "net")
    settings = pick(args.settings, [*SETTINGS, *SPIKINGJELLY_SETTINGS], "setting")
    timesteps = timesteps_up_to(args.max_t)
    torch.set_num_threads(args.threads)

    import onnxruntime

    from onnx_snn.measure.evaluation import ann_accuracy

    started = time.perf_counter()
    data = load_data(args.cache, args.retrain)
    calibration = data["x_train"][:CALIBRATION_SAMPLES]
    x_test, y_test = data["x_test"], data["y_test"]
    if args.test_samples:
        x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]
    print(f"data: {len(data['x_train'])} training, {len(x_test)} test images "
          f"(cache {args.cache})")
    sj_settings = [s for s in settings if s in SPIKINGJELLY_SETTINGS]
    no_sj = "--no-spikingjelly" if args.no_spikingjelly else \
        spikingjelly_available() if sj_settings else None
    if sj_settings and no_sj:
        print(f"note: no SpikingJelly rows ({no_sj})")

    results: dict[str, Any] = {}
    for name in nets:
        net_started = time.perf_counter()
        trained = trained_net(name, data, args.cache, args.retrain,
                              args.epochs or EPOCHS[name])
        ann_acc = ann_accuracy(trained["ann"], x_test, y_test)
        print(f"  {name}: ANN accuracy {100 * ann_acc:.2f} %", flush=True)
        rows, notes = {}, []
        other = sorted({type(m).__name__ for m in trained["net"].modules()
                        if isinstance(m, (nn.ReLU6, nn.Hardtanh, nn.LeakyReLU))})
        for setting in settings:
            if setting in SETTINGS:
                row = onnx_snn_curve(trained["ann"], SETTINGS[setting], calibration, x_test,
                                     y_test, timesteps, args.eval_batch)
            elif no_sj:
                continue
            elif other:
                note = (f"no SpikingJelly rows: its converters replace only nn.ReLU, and "
                        f"{name} has {', '.join(other)} (they would stay analog)")
                if note not in notes:
                    notes.append(note)
                    print(f"  {name}: {note}")
                continue
            else:
                row = spikingjelly_curve(trained["net"], SPIKINGJELLY_SETTINGS[setting],
                                         calibration, x_test, y_test, timesteps,
                                         args.sj_batch)
                if row is None:
                    notes.append(f"{setting}: not in the installed SpikingJelly")
                    print(f"  {name}: {notes[-1]}")
                    continue
            rows[setting] = row
            curve = " ".join(f"{100 * row['accuracy'][t]:.1f}" for t in timesteps)
            print(f"  {name} | {setting}: {curve} (convert {row['convert_s']:.1f} s, "
                  f"eval {row['eval_s']:.1f} s)", flush=True)
        results[name] = {"ann_accuracy": ann_acc, "training_s": trained["meta"]["training_s"],
                         "epochs": trained["meta"]["recipe"]["epochs"],
                         "parameters": trained["meta"]["parameters"], "rows": rows,
                         "notes": notes, "wall_s": time.perf_counter() - net_started}

    command = " ".join(["python", "benchmarks/deep_curves.py", *sys.argv[1:]])
    versions = (f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
                f"Python {platform.python_version()}, {args.threads} torch threads, "
                f"{os.cpu_count()} CPUs, load average at the end "
                f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print()
    print(f"Test accuracy (%, {len(y_test)} images) against T; `{command}`; calibration: "
          f"{len(calibration)} training images, batches of {CALIBRATION_BATCH}; {versions}; "
          f"{time.perf_counter() - started:.0f} s in all.")
    print()
    print("| net | setting | ANN | " + " | ".join(f"T={t}" for t in timesteps)
          + " | convert s | eval s |")
    print("|---|---|" + "---:|" * (len(timesteps) + 3))
    for name, result in results.items():
        for setting, row in result["rows"].items():
            print(f"| {name} | {setting} | {100 * result['ann_accuracy']:.1f} | "
                  + " | ".join(f"{100 * row['accuracy'][t]:.1f}" for t in timesteps)
                  + f" | {row['convert_s']:.1f} | {row['eval_s']:.1f} |")
    print()
    for name, result in results.items():
        print(f"- {name}: {result['parameters']:,} parameters, trained {result['epochs']} "
              f"epochs in {result['training_s']:.0f} s, ANN {100 * result['ann_accuracy']:.2f} %"
              f", wall time here {result['wall_s']:.0f} s"
              + "".join(f"; {note}" for note in result["notes"]))
    if args.json:
        args.json.write_text(json.dumps(
            {"command": command, "versions": versions, "timesteps": timesteps,
             "test_samples": len(y_test), "calibration_samples": len(calibration),
             "nets": results}, indent=2))


if __name__ == "__main__":
    main()
