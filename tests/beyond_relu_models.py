"""Trained nets beyond ReLU for ``tests/test_beyond_relu_models.py`` and
``benchmarks/beyond_relu.py``: tiny, seeded versions of a Vision Transformer,
EfficientNet, MobileNetV3, ConvNeXt and a BERT-style encoder, written in plain
torch (no torchvision) and trained on scikit-learn's digits.

The data: scikit-learn's digits (8x8 images / 16.0, 10 classes), split 70/30
stratified with ``random_state=0`` (the split of
``onnx_snn.demo.digits.load_digits_split``: 1257 training, 540 test digits). The
image nets take float32 [N, 1, 8, 8] in [0, 1]. ``bert`` takes int64 tokens
[N, 16]: each image is cut into 16 patches of 2x2 pixels (row-major), and each
patch becomes the id sum(2^i) over its pixels i (row-major in the patch) above
0.5, in [0, 16): the on/off pattern of the patch. (The id round(16 * mean of the
patch) loses the layout inside the patch: a linear model on the 16 ids reaches
about 90 %, the BERT-style net 85 %; the patterns keep about 94 %.)

The nets (each with distinct activation modules, so a converter sees every one):

- ``vit``: patch embedding Conv2d(1, 32, 2, stride 2) -> 16 tokens, a learned cls
  token and position embedding, 2 pre-norm encoder blocks (LayerNorm, multi-head
  self-attention written by hand, LayerNorm, MLP 32-64-32 with GELU and dropout
  0.1, residuals), final LayerNorm, the cls token -> Linear. The attention
  (``Attention``, 4 heads) works on [L, N, D] (``permute(1, 0, 2)``) as torch's
  MultiheadAttention does: Linear q/k/v, reshape to [L, N, H, d] (the length read
  from the tensor's shape, the batch as -1) and permute to heads [N, H, L, d],
  ``q @ k^T``, scale, Softmax, ``@ v``, permute and reshape back to [L, N, D],
  output Linear, and ``permute(1, 0, 2)`` back to [N, L, D]; so the batch axis moves.
- ``efficientnet``: stem conv3x3-BN-SiLU, 3 MBConv blocks (1x1 expand-BN-SiLU,
  depthwise 3x3-BN-SiLU, squeeze-excite ``x * sigmoid(fc2(silu(fc1(avgpool(x)))))``
  with 1x1 convs, 1x1 project-BN without activation, residual where the shape is
  kept; expansion 4, widths 16/24/24, strides 1/2/1), head conv1x1-BN-SiLU,
  global average pooling, Linear.
- ``mobilenetv3``: stem conv3x3-BN-Hardswish, 3 inverted residuals (1x1 expand,
  depthwise 3x3, optional SE with ReLU inside and a Hardsigmoid gate, 1x1
  project; ReLU in the first block, Hardswish in the others, as MobileNetV3's
  RE/HS blocks), last conv1x1-BN-Hardswish, global average pooling,
  Linear-Hardswish-Dropout-Linear.
- ``convnext``: stem Conv2d(1, 16, 3, padding 1) + LayerNorm over channels
  (``LayerNorm2d``: permute to channels-last, nn.LayerNorm, permute back),
  ConvNeXt blocks (depthwise 3x3 conv, permute to channels-last, LayerNorm,
  Linear 4x expansion, GELU, Linear back, layer scale, permute back, residual):
  one at width 16 on 8x8, a downsampling layer (LayerNorm2d, Conv2d 2x2 stride
  2) to width 32 on 4x4, two blocks there, global average pooling, LayerNorm,
  Linear.
- ``bert``: token embedding nn.Embedding(16, 32) + learned position embedding
  (initialised N(0, 1) like the token embedding: the position is what tells the
  tokens apart), embedding LayerNorm, 2 post-norm encoder blocks (the
  hand-written attention of ``vit``, Add & LayerNorm, MLP 32-64-32 with GELU and
  dropout 0.1, Add & LayerNorm), mean pooling over the tokens, Linear.

Training (``train_net``): one torch thread, ``torch.manual_seed(0)``, AdamW with a
cosine schedule, cross-entropy, batches of 64 shuffled by a seeded generator;
epochs, learning rate, weight decay and label smoothing from ``RECIPES[arch]``
(6-20 epochs, a few seconds per net); no augmentation. The net is returned in
eval mode (dropout off). Single-threaded CPU training is deterministic, so every
call gives the same weights.

``BeyondReluBuilder(directory).build(arch, exporter)`` trains each net once (both
exporters share the weights), exports it with ``export_torch`` (``dynamo`` or
``torchscript``) and writes ``ann.onnx`` with ``calib.npz`` (``x`` = the first
CALIB training inputs) and ``test.npz`` (``x`` = the 540 test inputs, ``y`` = their
true labels), plus ``model.json`` (RECIPE_VERSION, ANN accuracy, parameters);
``ann_accuracy`` is the exported file's accuracy on the test set in onnxruntime.
``reuse=True`` takes a folder written earlier with the same RECIPE_VERSION as it
is (the benchmark's cache). Nothing here is written to the repository.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from zoo_models import ort_outputs

ARCHITECTURES = ("vit", "efficientnet", "mobilenetv3", "convnext", "bert")
EXPORTERS = ("dynamo", "torchscript")
CLASSES = 10
#: Calibration inputs: the first CALIB training inputs.
CALIB = 200
#: Token ids of ``bert``: the on/off pattern of a 2x2 patch, in [0, VOCAB).
VOCAB = 16
#: A pixel is on in a token when above this.
TOKEN_THRESHOLD = 0.5
BATCH = 64
SEED = 0
#: Bump when a net or its training changes: the builder's ``reuse`` then retrains.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float
    weight_decay: float = 0.0
    label_smoothing: float = 0.0


#: arch -> its training recipe (AdamW, cosine schedule over the epochs).
RECIPES = {
    "vit": Recipe(20, 3e-3, 0.05, 0.1),
    "efficientnet": Recipe(6, 3e-3),
    "mobilenetv3": Recipe(12, 3e-3),
    "convnext": Recipe(15, 5e-3, 0.05, 0.1),
    "bert": Recipe(20, 3e-3, 0.05, 0.1),
}


# --------------------------------------------------------------------------- data

@functools.cache
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train images, train labels, test images, test labels)``, images [N, 8, 8]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    train_img, test_img, train_y, test_y = train_test_split(
        images, labels, test_size=0.3, random_state=0, stratify=labels)
    return train_img, train_y, test_img, test_y


def tokens(images: np.ndarray) -> np.ndarray:
    """int64 [N, 16]: one id per 2x2 patch of [N, 8, 8] images (patches row-major), the
    sum of 2^i over its pixels i (row-major in the patch) above TOKEN_THRESHOLD."""
    on = images.reshape(len(images), 4, 2, 4, 2).transpose(0, 1, 3, 2, 4) > TOKEN_THRESHOLD
    bits = on.reshape(len(images), 16, 4).astype(np.int64)
    return bits @ (2 ** np.arange(4, dtype=np.int64))


def digits_data(arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` for ``arch``: images float32 [N, 1, 8, 8]
    in [0, 1], or int64 tokens [N, 16] for ``bert``; labels int64."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}")
    train_img, train_y, test_img, test_y = _digits_split()
    if arch == "bert":
        return tokens(train_img), train_y, tokens(test_img), test_y
    return train_img[:, None], train_y, test_img[:, None], test_y


# --------------------------------------------------------------------------- attention

class Attention(nn.Module):
    """Multi-head self-attention on [N, L, D], written out as torch's
    MultiheadAttention computes it on [L, N, D]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def split(self, x):
        """[L, N, D] -> [N, H, L, d]."""
        return x.reshape(x.shape[0], -1, self.heads, self.head_dim).permute(1, 2, 0, 3)

    def forward(self, x):
        x = x.permute(1, 0, 2)                                     # [L, N, D]
        length, dim = x.shape[0], x.shape[2]
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        weights = self.softmax((q @ k.transpose(-2, -1)) * self.scale)   # [N, H, L, L]
        context = (weights @ v).permute(2, 0, 1, 3).reshape(length, -1, dim)  # [L, N, D]
        return self.out(context).permute(1, 0, 2)                 # [N, L, D]


class Mlp(nn.Module):
    """Linear-GELU-Linear-Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.act(self.fc1(x))))


# --------------------------------------------------------------------------- ViT

class PreNormBlock(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, hidden: int = 64,
                 patch: int = 2) -> None:
        super().__init__()
        tokens_ = (8 // patch) ** 2
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens_ + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(PreNormBlock(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)                # [N, 16, D]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


# --------------------------------------------------------------------------- EfficientNet

class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(avgpool(x))))), fc = 1x1 convs."""

    def __init__(self, channels: int, squeezed: int, act: type[nn.Module] = nn.SiLU,
                 gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act = nn.Conv2d(channels, squeezed, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeezed, channels, 1), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.SiLU) -> nn.Sequential:
    """Conv (no bias) -> BN [-> act]."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4,
                 se_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_act(cin, hidden, 1),
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            SqueezeExcite(hidden, max(1, int(cin * se_ratio))),
            conv_bn_act(hidden, cout, 1, act=None))

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class EfficientNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_act(1, 16, 3)
        self.blocks = nn.Sequential(MBConv(16, 16, 1), MBConv(16, 24, 2), MBConv(24, 24, 1))
        self.head = conv_bn_act(24, 64, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, CLASSES)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------- MobileNetV3

class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int, se: bool,
                 act: type[nn.Module]) -> None:
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        layers = [conv_bn_act(cin, hidden, 1, act=act),
                  conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=act)]
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4), act=nn.ReLU,
                                        gate=nn.Hardsigmoid))
        layers.append(conv_bn_act(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(1, 16, 3, act=nn.Hardswish),
            InvertedResidualV3(16, 32, 16, 1, se=True, act=nn.ReLU),
            InvertedResidualV3(16, 48, 24, 2, se=False, act=nn.Hardswish),
            InvertedResidualV3(24, 72, 24, 1, se=True, act=nn.Hardswish),
            conv_bn_act(24, 64, 1, act=nn.Hardswish))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(64, 64), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(64, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------- ConvNeXt

class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of [N, C, H, W]: channels-last, nn.LayerNorm, back."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel: int = 3, layer_scale: float = 0.1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act = nn.Linear(dim, 4 * dim), nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)                      # [N, H, W, C]
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), LayerNorm2d(16))
        self.stage1 = ConvNeXtBlock(16)
        self.downsample = nn.Sequential(LayerNorm2d(16), nn.Conv2d(16, 32, 2, stride=2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.norm = nn.LayerNorm(32, eps=1e-6)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


# --------------------------------------------------------------------------- BERT

class PostNormBlock(nn.Module):
    """LN(x + attn(x)), then LN(x + mlp(x)) (BERT's layer)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn, self.norm1 = Attention(dim, heads), nn.LayerNorm(dim, eps=1e-12)
        self.mlp, self.norm2 = Mlp(dim, hidden), nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class Bert(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, hidden: int = 64,
                 length: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim))
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.blocks = nn.Sequential(*(PostNormBlock(dim, heads, hidden) for _ in range(depth)))
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, ids):
        x = self.norm(self.embed(ids) + self.pos)
        return self.head(self.blocks(x).mean(1))


CONSTRUCTORS = {"vit": ViT, "efficientnet": EfficientNet, "mobilenetv3": MobileNetV3,
                "convnext": ConvNeXt, "bert": Bert}


# --------------------------------------------------------------------------- training

def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train_net(arch: str) -> nn.Module:
    """``arch`` trained on the digits training set (see the module docstring), in
    eval mode; the same weights on every call."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}")
    x_train, y_train, _, _ = digits_data(arch)
    return train_with(CONSTRUCTORS[arch], RECIPES[arch], x_train, y_train)


def train_with(make: Callable[[], nn.Module], recipe: Recipe, x_train: np.ndarray,
               y_train: np.ndarray) -> nn.Module:
    """``make()`` (called after seeding torch) trained with ``recipe`` on the data, in
    eval mode: one torch thread, AdamW, a cosine schedule, label smoothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(SEED)
        net = make()
        optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr,
                                      weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs)
        inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
        generator = torch.Generator().manual_seed(SEED)
        net.train()
        for _ in range(recipe.epochs):
            for index in torch.randperm(len(inputs), generator=generator).split(BATCH):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(net(inputs[index]), targets[index],
                                                   label_smoothing=recipe.label_smoothing)
                loss.backward()
                optimizer.step()
            scheduler.step()
        return net.eval()
    finally:
        torch.set_num_threads(threads)


def torch_logits(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- builder

@dataclass
class BeyondReluModel:
    """An exported, trained ANN and its data files."""
    id: str                  # e.g. "vit-dynamo"
    directory: Path
    ann: Path
    calib: Path              # x: the first CALIB training inputs
    test: Path               # x: the 540 test inputs, y: their true labels
    ann_accuracy: float      # of ann.onnx on test.npz, in onnxruntime
    arch: str = ""
    exporter: str = ""


class BeyondReluBuilder:
    """Trains each architecture once and exports it once per exporter into
    ``directory``. With ``reuse=True``, a folder written by an earlier builder with
    the same RECIPE_VERSION is used as it is (no training, no export)."""

    def __init__(self, directory: Path, reuse: bool = False) -> None:
        self.directory = Path(directory)
        self.reuse = reuse
        self._nets: dict[str, nn.Module] = {}
        #: arch -> seconds spent in train_net.
        self.train_seconds: dict[str, float] = {}
        self._models: dict[str, BeyondReluModel] = {}

    def net(self, arch: str) -> nn.Module:
        """The trained net (trained on first use)."""
        if arch not in self._nets:
            started = time.perf_counter()
            self._nets[arch] = train_net(arch)
            self.train_seconds[arch] = time.perf_counter() - started
        return self._nets[arch]

    def build(self, arch: str, exporter: str) -> BeyondReluModel:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}")
        if exporter not in EXPORTERS:
            raise ValueError(f"unknown exporter {exporter!r}")
        key = f"{arch}-{exporter}"
        if key not in self._models:
            self._models[key] = self._reused(arch, exporter) or self._export(arch, exporter)
        return self._models[key]

    def _files(self, arch: str, exporter: str) -> tuple[Path, Path, Path, Path, Path]:
        folder = self.directory / f"{arch}-{exporter}"
        return (folder, folder / "ann.onnx", folder / "calib.npz", folder / "test.npz",
                folder / "model.json")

    def _reused(self, arch: str, exporter: str) -> BeyondReluModel | None:
        folder, ann, calib, test, meta = self._files(arch, exporter)
        if not self.reuse or not all(p.is_file() for p in (ann, calib, test, meta)):
            return None
        info = json.loads(meta.read_text())
        if info.get("recipe") != RECIPE_VERSION:
            return None
        return BeyondReluModel(f"{arch}-{exporter}", folder, ann, calib, test,
                               float(info["ann_accuracy"]), arch, exporter)

    def _export(self, arch: str, exporter: str) -> BeyondReluModel:
        from onnx_snn.export.torch import export_torch

        folder, ann, calib, test, meta = self._files(arch, exporter)
        folder.mkdir(parents=True, exist_ok=True)
        x_train, _, x_test, y_test = digits_data(arch)
        net = self.net(arch)
        export_torch(net, torch.from_numpy(x_train[:2]), ann, dynamo=exporter == "dynamo")
        np.savez(calib, x=x_train[:CALIB])
        np.savez(test, x=x_test, y=y_test)
        predictions = ort_outputs(ann, x_test)[0].argmax(axis=1)
        accuracy = float((predictions == y_test).mean())
        meta.write_text(json.dumps({"recipe": RECIPE_VERSION, "ann_accuracy": accuracy,
                                    "parameters": parameter_count(net)}))
        return BeyondReluModel(f"{arch}-{exporter}", folder, ann, calib, test, accuracy,
                               arch, exporter)

