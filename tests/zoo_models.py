"""An architecture zoo for ``tests/test_zoo.py``: tiny, seeded versions of common
CNN families written in plain torch (no torchvision), each on [N, 3, 32, 32] with
10 classes, plus the skl2onnx digits classifier of ``tests/pattern_models.py``.

Every net is randomly initialised with a fixed seed; its BatchNorm running
statistics are the cumulative average (``momentum=None``) over the zoo's data in
train mode, then the net is put in eval mode and its last Linear is rescaled so
that each logit is standardised over the data (so the argmax is spread over the
classes). The data are the first SAMPLES of scikit-learn's digits, upsampled 4x to
32x32 and tiled to 3 channels with a different gain per channel (plus seeded noise).

``ZooBuilder(directory).build(arch, exporter)`` exports a net once per exporter
(``dynamo`` or ``torchscript``) and writes ``ann.onnx`` with ``calib.npz`` (``x``)
and ``test.npz`` (``x`` and ``y`` = the ANN's own argmax, from onnxruntime on the
exported file). Nothing here is written to the repository.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Samples: BatchNorm statistics use all of them; calibration the first CALIB,
#: testing the last TEST (disjoint from calibration).
SAMPLES = 192
CALIB = 32
TEST = 32
BN_BATCH = 64
IMAGE = (3, 32, 32)
CLASSES = 10
EXPORTERS = ("dynamo", "torchscript")


# --------------------------------------------------------------------------- data

@functools.cache
def zoo_images() -> np.ndarray:
    """[SAMPLES, 3, 32, 32] float32 in [0, 1]: digits 8x8 -> 32x32, 3 channels."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:SAMPLES] / 16.0                  # [S, 8, 8]
    big = digits.repeat(4, axis=1).repeat(4, axis=2)                # [S, 32, 32]
    gains = np.array([1.0, 0.8, 0.6])[None, :, None, None]
    rng = np.random.default_rng(2024)
    noise = rng.normal(scale=0.02, size=(SAMPLES, *IMAGE))
    return np.clip(big[:, None] * gains + noise, 0.0, 1.0).astype(np.float32)


def calib_images() -> np.ndarray:
    return zoo_images()[:CALIB]


def held_out_images() -> np.ndarray:
    return zoo_images()[-TEST:]


# --------------------------------------------------------------------------- blocks

def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            relu: str | None = "relu"):
    """Conv (no bias) -> BN [-> ReLU | ReLU6]."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if relu == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif relu == "relu6":
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _Head(nn.Module):
    """Global average pooling + Linear."""

    def __init__(self, channels: int, classes: int = CLASSES) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


# ----- ResNet

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, planes, 3, stride)
        self.conv2 = conv_bn(planes, planes, 3, relu=None)
        self.shortcut = (conv_bn(cin, planes, 1, stride, relu=None)
                         if stride != 1 or cin != planes else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 1)
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.conv3 = conv_bn(planes, out, 1, relu=None)
        self.shortcut = (conv_bn(cin, out, 1, stride, relu=None)
                         if stride != 1 or cin != out else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv-BN-ReLU (+ MaxPool 3x3/2 with ``stem_pool``), three stages of
    ``blocks`` blocks with strides 1/2/2, head."""

    def __init__(self, block, widths=(8, 16, 32), blocks=(1, 1, 1), stem: int = 8,
                 stem_pool: bool = False) -> None:
        super().__init__()
        layers = [conv_bn(3, stem, 3)]
        if stem_pool:
            layers.append(nn.MaxPool2d(3, 2, 1))
        cin = stem
        for i, (planes, count) in enumerate(zip(widths, blocks)):
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(block(cin, planes, stride))
                cin = planes * block.expansion
        self.features = nn.Sequential(*layers)
        self.head = _Head(cin)

    def forward(self, x):
        return self.head(self.features(x))


def resnet18():
    """BasicBlocks 8/16/32, CIFAR-style stem (no pool)."""
    return ResNet(BasicBlock, (8, 16, 32), (2, 1, 1))


def resnet50():
    """Bottlenecks with planes 4/8/16 (outputs 16/32/64), torchvision-style stem
    MaxPool."""
    return ResNet(Bottleneck, (4, 8, 16), (1, 1, 1), stem_pool=True)


# ----- VGG

class VGG(nn.Module):
    """VGG-BN: [Conv-BN-ReLU]* MaxPool stacks, then GAP and a Linear-ReLU-Dropout-
    Linear classifier."""

    def __init__(self, cfg=(8, "M", 16, "M", 32, 32, "M")) -> None:
        super().__init__()
        layers, cin = [], 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(conv_bn(cin, item, 3))
                cin = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(cin, 32), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(32, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg():
    return VGG()


# ----- DenseNet

class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 on the concatenation of all
    earlier features."""

    def __init__(self, cin: int, growth: int, bottleneck: int = 2) -> None:
        super().__init__()
        mid = growth * bottleneck
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.Module):
    def __init__(self, layers: int, cin: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth)
                                    for i in range(layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """Stem conv-BN-ReLU-MaxPool, dense block, transition (BN-ReLU-Conv1x1-
    AvgPool), dense block, BN-ReLU, head (as torchvision's DenseNet)."""

    def __init__(self, growth: int = 4, stem: int = 8, layers=(2, 2)) -> None:
        super().__init__()
        modules = [nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem),
                   nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        cin = stem
        for i, count in enumerate(layers):
            modules.append(DenseBlock(count, cin, growth))
            cin += count * growth
            if i < len(layers) - 1:
                modules += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                            nn.Conv2d(cin, cin // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
                cin //= 2
        modules += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*modules)
        self.head = _Head(cin)

    def forward(self, x):
        return self.head(self.features(x))


def densenet():
    return DenseNet()


# ----- Inception

class InceptionModule(nn.Module):
    """1x1 || 1x1-3x3 || 1x1-5x5 || MaxPool3x3/1-1x1, concatenated (GoogLeNet)."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                 pool: int) -> None:
        super().__init__()
        self.branch1 = conv_bn(cin, c1, 1)
        self.branch2 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        self.branch3 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, pool, 1))
        self.out_channels = c1 + c3 + c5 + pool

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], 1)


class Inception(nn.Module):
    """Stem conv-BN-ReLU-MaxPool, inception, MaxPool (after the Concat), inception,
    head."""

    def __init__(self) -> None:
        super().__init__()
        a = InceptionModule(8, 4, 4, 8, 2, 4, 4)
        b = InceptionModule(a.out_channels, 8, 4, 8, 2, 4, 4)
        self.features = nn.Sequential(conv_bn(3, 8, 3), nn.MaxPool2d(3, 2, 1), a,
                                      nn.MaxPool2d(3, 2, 1), b)
        self.head = _Head(b.out_channels)

    def forward(self, x):
        return self.head(self.features(x))


def inception():
    return Inception()


# ----- SqueezeNet

class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 layout (no BatchNorm): conv-ReLU-MaxPool, fire, fire, MaxPool,
    fire, head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 8), Fire(16, 4, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 8, 16))
        self.head = _Head(32)
        for module in self.features.modules():  # torchvision's init: no bias offsets
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.head(self.features(x))


def squeezenet():
    return SqueezeNet()


# ----- ShuffleNet V2

def channel_shuffle(x, groups: int):
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = x.transpose(1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 InvertedResidual: stride 1 splits the channels (chunk) and
    transforms one half; stride 2 transforms both; Concat then channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, relu=None),
                                         conv_bn(cin, half, 1))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            conv_bn(cin if stride > 1 else half, half, 1),
            conv_bn(half, half, 3, stride, groups=half, relu=None),
            conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    """Stem conv-BN-ReLU-MaxPool, units (stride 2, 1, 2, 1), conv5 1x1-BN-ReLU,
    ``mean([2, 3])`` (as torchvision), Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1),
                                    ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1))
        self.conv5 = conv_bn(32, 48, 1)
        self.fc = nn.Linear(48, CLASSES)

    def forward(self, x):
        x = self.conv5(self.stages(self.stem(x)))
        return self.fc(x.mean([2, 3]))


def shufflenet():
    return ShuffleNet()


# ----- MobileNetV2

class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers = [conv_bn(cin, hidden, 1, relu="relu6")] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, relu="relu6"),
                   conv_bn(hidden, cout, 1, relu=None)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv-BN-ReLU6 /2, inverted residuals (t, c, n, s) = (1, 8, 1, 1),
    (4, 12, 2, 2), (4, 16, 2, 2), last 1x1 conv-BN-ReLU6, GAP, Dropout, Linear."""

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [conv_bn(3, 8, 3, 2, relu="relu6")], 8
        for t, c, n, s in ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2)):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 64, 1, relu="relu6"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, CLASSES))

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2():
    return MobileNetV2()


# ----- RegNet (grouped convolutions)

class XBlock(nn.Module):
    """RegNetX ResBottleneckBlock: 1x1-BN-ReLU, grouped 3x3 (group width 4)-BN-ReLU,
    1x1-BN, projection shortcut when needed, Add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 4) -> None:
        super().__init__()
        self.f = nn.Sequential(conv_bn(cin, cout, 1),
                               conv_bn(cout, cout, 3, stride, groups=cout // group_width),
                               conv_bn(cout, cout, 1, relu=None))
        self.proj = (conv_bn(cin, cout, 1, stride, relu=None)
                     if stride != 1 or cin != cout else None)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        skip = self.proj(x) if self.proj is not None else x
        return self.activation(skip + self.f(x))


class RegNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2)
        self.trunk = nn.Sequential(XBlock(8, 16, 1), XBlock(16, 16, 1), XBlock(16, 32, 2))
        self.head = _Head(32)

    def forward(self, x):
        return self.head(self.trunk(self.stem(x)))


def regnet():
    return RegNet()


#: name -> (constructor, seed)
ARCHITECTURES = {
    "resnet18": (resnet18, 1),
    "resnet50": (resnet50, 2),
    "vgg": (vgg, 3),
    "densenet": (densenet, 4),
    "inception": (inception, 5),
    "squeezenet": (squeezenet, 6),
    "shufflenet": (shufflenet, 7),
    "mobilenetv2": (mobilenetv2, 8),
    "regnet": (regnet, 9),
}


# --------------------------------------------------------------------------- nets

@functools.cache
def build_net(arch: str):
    """The seeded net with BN running statistics from the zoo data, in eval mode."""
    constructor, seed = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    net = constructor()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None          # cumulative average of the batch statistics
        norm.reset_running_stats()
    if norms:
        x = torch.from_numpy(zoo_images())
        net.train()
        with torch.no_grad():
            for start in range(0, len(x), BN_BATCH):
                net(x[start:start + BN_BATCH])
    net.eval()
    _standardise_logits(net)
    return net


def _standardise_logits(net) -> None:
    """Rescale the last Linear so that each class logit has mean 0 and std 1 over the
    zoo data (a BN on the logits, folded in): a random head otherwise predicts one
    or two classes for every sample, and agreement with it says little."""
    fc = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    seen = []
    hook = fc.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        net(torch.from_numpy(zoo_images()))
        hook.remove()
        logits = seen[0]
        mean, std = logits.mean(0), logits.std(0) + 1e-6
        fc.weight.div_(std[:, None])
        fc.bias.sub_(mean).div_(std)


def torch_logits(arch: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return build_net(arch)(torch.from_numpy(x)).numpy()


def ort_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


@dataclass
class ZooModel:
    """An exported ANN and its data files."""
    id: str                  # e.g. "resnet18-dynamo"
    directory: Path
    ann: Path
    calib: Path              # x [CALIB, 3, 32, 32]
    test: Path               # x [TEST, 3, 32, 32], y = the ANN's argmax (onnxruntime)
    expected_ann_accuracy: float
    arch: str = ""
    exporter: str = ""


class ZooBuilder:
    """Exports each (architecture, exporter) once into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._models: dict[str, ZooModel] = {}

    def build(self, arch: str, exporter: str) -> ZooModel:
        key = f"{arch}-{exporter}"
        if key not in self._models:
            self._models[key] = self._export(arch, exporter)
        return self._models[key]

    def _export(self, arch: str, exporter: str) -> ZooModel:
        from onnx_snn.export.torch import export_torch

        if exporter not in EXPORTERS:
            raise ValueError(f"unknown exporter {exporter!r}")
        folder = self.directory / f"{arch}-{exporter}"
        folder.mkdir(parents=True, exist_ok=True)
        ann = folder / "ann.onnx"
        example = torch.from_numpy(calib_images()[:2])
        export_torch(build_net(arch), example, ann, dynamo=exporter == "dynamo")
        calib, test = folder / "calib.npz", folder / "test.npz"
        np.savez(calib, x=calib_images())
        x_test = held_out_images()
        labels = ort_outputs(ann, x_test)[0].argmax(axis=1).astype(np.int64)
        np.savez(test, x=x_test, y=labels)
        return ZooModel(f"{arch}-{exporter}", folder, ann, calib, test, 1.0, arch, exporter)

    def sklearn(self, zipmap: bool) -> ZooModel:
        """The skl2onnx digits MLPClassifier (input 'X' [N, 64]); test labels are the
        true digits, so eval's ANN accuracy must equal ``clf.score``."""
        key = f"sklearn_mlp-{'zipmap' if zipmap else 'tensor'}"
        if key not in self._models:
            import onnx
            from pattern_models import digits_classifier, sklearn_onnx

            clf, x_train, _, x_test, y_test = digits_classifier()
            folder = self.directory / key
            folder.mkdir(parents=True, exist_ok=True)
            ann = folder / "ann.onnx"
            onnx.save(sklearn_onnx(zipmap), ann)
            calib, test = folder / "calib.npz", folder / "test.npz"
            np.savez(calib, x=x_train.astype(np.float32))
            np.savez(test, x=x_test.astype(np.float32), y=np.asarray(y_test, np.int64))
            self._models[key] = ZooModel(key, folder, ann, calib, test,
                                         float(clf.score(x_test, y_test)), "sklearn_mlp",
                                         "skl2onnx")
        return self._models[key]
