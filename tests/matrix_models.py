"""The models of ``tests/test_option_matrix.py``: every zoo architecture of
``tests/zoo_models.py`` (plus a net with channels-last activations), in every form
an exporter writes it: ``dynamo`` or ``torchscript``, a dynamic or a fixed batch
(batch 1, no dynamic axes), NCHW or NHWC input.

To keep the matrix fast the nets run on 16x16 images (the zoo's digits, upsampled
2x instead of 4x, so the same pictures at half the resolution): the zoo's
constructors and seeds, with BatchNorm statistics and standardised logits computed
on these images as ``zoo_models.build_net`` does on its own.

- ``dynamic``: ``onnx_snn.export.torch.export_torch`` (batch axis dynamic), as the zoo.
- ``fixed``: ``torch.onnx.export`` at batch 1 with no dynamic axes.
- ``nhwc``: the net wrapped so that its input is [N, H, W, C] and permuted to NCHW
  inside (a Transpose right after the input, as Keras-style graphs have).
- ``channels_last``: a stem conv, then a ConvNeXt-style residual block on
  channels-last activations (permute to NHWC, Linear over channels, ReLU, Linear,
  permute back), MaxPool, conv, head: its ReLU acts on [N, H, W, C], so per-channel
  scales and thresholds are taken over the last axis.

``MatrixBuilder(directory).build(arch, exporter, batch, layout)`` exports each form
once and writes ``ann.onnx`` and ``calib.npz``; the held-out inputs (in the form's
layout) and the ANN's outputs on them (onnxruntime on the exported file, row by
row for a fixed batch) come with it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from zoo_models import ARCHITECTURES, BN_BATCH, CLASSES, EXPORTERS, _Head, conv_bn, zoo_images

CALIB = 32
TEST = 16
BATCHES = ("dynamic", "fixed")
LAYOUTS = ("nchw", "nhwc")


# --------------------------------------------------------------------------- data

@functools.cache
def matrix_images() -> np.ndarray:
    """[SAMPLES, 3, 16, 16] float32: the zoo's images at half resolution."""
    return np.ascontiguousarray(zoo_images()[:, :, ::2, ::2])


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "nhwc" else x


# --------------------------------------------------------------------------- nets

class ChannelsLastBlock(nn.Module):
    """x + permute_back(fc2(relu(fc1(permute(x))))): a ReLU on [N, H, W, 2C]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, 2 * channels)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(2 * channels, channels)

    def forward(self, x):
        y = self.fc2(self.relu(self.fc1(x.permute(0, 2, 3, 1))))
        return x + y.permute(0, 3, 1, 2)


class ChannelsLastNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3), ChannelsLastBlock(8), nn.ReLU(),
                                      nn.MaxPool2d(2, 2), conv_bn(8, 16, 3))
        self.head = _Head(16)

    def forward(self, x):
        return self.head(self.features(x))


#: name -> (constructor, seed): the zoo's, and the channels-last net.
MATRIX_ARCHITECTURES = {**ARCHITECTURES, "channels_last": (ChannelsLastNet, 10)}


class NHWCInput(nn.Module):
    """``net`` on an [N, H, W, C] input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


@functools.cache
def build_matrix_net(arch: str) -> nn.Module:
    """The seeded net, BN statistics from ``matrix_images``, logits standardised."""
    constructor, seed = MATRIX_ARCHITECTURES[arch]
    torch.manual_seed(seed)
    net = constructor()
    x = torch.from_numpy(matrix_images())
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None
        norm.reset_running_stats()
    if norms:
        net.train()
        with torch.no_grad():
            for start in range(0, len(x), BN_BATCH):
                net(x[start:start + BN_BATCH])
    net.eval()
    fc = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    seen = []
    hook = fc.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        net(x)
        hook.remove()
        mean, std = seen[0].mean(0), seen[0].std(0) + 1e-6
        fc.weight.div_(std[:, None])
        fc.bias.sub_(mean).div_(std)
    assert seen[0].shape[1] == CLASSES
    return net


# --------------------------------------------------------------------------- export

def export_form(net: nn.Module, example: torch.Tensor, path: Path, exporter: str,
                batch: str) -> None:
    if batch == "dynamic":
        from onnx_snn.export.torch import export_torch

        export_torch(net, example, path, dynamo=exporter == "dynamo")
        return
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example[:1],), str(path), dynamo=exporter == "dynamo",
                              input_names=["x"], output_names=["y"],
                              **({} if exporter == "dynamo" else {"opset_version": 17}))
    finally:
        logger.setLevel(level)


def ann_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The ANN's first output on ``x`` in plain onnxruntime (row by row when the
    exported batch is fixed)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    if isinstance(spec.shape[0], int):
        return np.concatenate([session.run(None, {spec.name: x[i:i + 1]})[0]
                               for i in range(len(x))])
    return session.run(None, {spec.name: x})[0]


@dataclass
class MatrixModel:
    id: str                  # e.g. "resnet18-dynamo-fixed-nhwc"
    directory: Path
    ann: Path
    calib: Path              # x [CALIB, ...] in the form's layout
    x_test: np.ndarray       # [TEST, ...] in the form's layout
    ann_test: np.ndarray     # the ANN's outputs on x_test [TEST, CLASSES]


class MatrixBuilder:
    """Exports each (architecture, exporter, batch, layout) once into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._models: dict[str, MatrixModel] = {}

    def build(self, arch: str, exporter: str, batch: str, layout: str) -> MatrixModel:
        key = f"{arch}-{exporter}-{batch}-{layout}"
        if key not in self._models:
            if exporter not in EXPORTERS or batch not in BATCHES or layout not in LAYOUTS:
                raise ValueError(f"unknown form {key!r}")
            folder = self.directory / key
            folder.mkdir(parents=True, exist_ok=True)
            net = build_matrix_net(arch)
            if layout == "nhwc":
                net = NHWCInput(net).eval()
            images = matrix_images()
            calib = to_layout(images[:CALIB], layout)
            x_test = to_layout(images[-TEST:], layout)
            ann = folder / "ann.onnx"
            export_form(net, torch.from_numpy(calib[:2]), ann, exporter, batch)
            np.savez(folder / "calib.npz", x=calib)
            self._models[key] = MatrixModel(key, folder, ann, folder / "calib.npz", x_test,
                                            ann_outputs(ann, x_test))
        return self._models[key]
