"""Peak memory and time of SNN runs against T: chunked (a memory limit, or the default
budget) against one unchunked call, on ImageNet- and CIFAR-size ResNets.

Nets (plain torch, random weights, BatchNorm statistics from seeded noise, exported
with the TorchScript exporter, converted with the default preset on 8 random
images):

- ``resnet18``: torchvision's ResNet-18 layout (64-512 channels) on 3x224x224;
- ``resnet20``: the CIFAR ResNet-20 (16-64 channels, 3x3 basic blocks) on 3x32x32.

Each run is a fresh Python process that loads the converted model, runs
``SpikingSession(model, memory_limit=...).run(x, T)`` on N random images and
reports its peak RSS (VmHWM) and wall time. Modes:

- ``limit``: ``memory_limit=--limit`` (default 2GB);
- ``default``: no limit given, so half of the available memory;
- ``unchunked``: one call on all T steps (a limit of 1 PB), run only where
  the estimate fits in 80 % of the available memory;
- ``spikingjelly``: SpikingJelly 2.0's ann2snn of the same torch net (rate-coding
  recipe, max, on the same 8 images), run for T single-step calls on all N images
  (``pip install --no-deps spikingjelly==2.0.0 loguru``; skipped where it is not
  installed). torch and onnxruntime use their default threads.

    python benchmarks/memory_scaling.py [--nets resnet18,resnet20]
        [--timesteps 8,32,128,512,1024] [--samples resnet18=64,resnet20=64]
        [--modes limit,default,unchunked,spikingjelly] [--limit 2GB] [--json F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, re, sys, time
from pathlib import Path
import numpy as np
model, image, samples, steps, limit = sys.argv[1:6]
samples, steps = int(samples), int(steps)
x = np.random.default_rng(1).random((samples, *json.loads(image)), dtype=np.float32)
if limit == "spikingjelly":
    import torch
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter
    from spikingjelly.activation_based.ann2snn.recipes.rate_coding import RateCodingRecipe
    sys.path.insert(0, sys.argv[6])
    from memory_scaling import calibration_images, resnet
    calib = [torch.from_numpy(calibration_images(json.loads(image)))]
    net = Converter(RateCodingRecipe(calib, mode="max", momentum=0.1)).convert(
        resnet(model)).eval()
    inputs = torch.from_numpy(x)
    started = time.perf_counter()
    with torch.no_grad():
        functional.reset_net(net)
        total = net(inputs)
        for _ in range(steps - 1):
            total = total + net(inputs)
    plan = "step by step"
else:
    from onnx_snn import SpikingSession
    session = SpikingSession(model, memory_limit=None if limit == "none" else limit)
    started = time.perf_counter()
    session.run(x, steps)
    plan = session.last_plan.describe()
seconds = time.perf_counter() - started
peak = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"peak_rss_mb": peak / 1024, "seconds": seconds, "plan": plan}))
"""


def resnet(kind: str):
    """ResNet-18 (ImageNet layout) or ResNet-20 (CIFAR layout) in plain torch."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.skip(x))

    if kind == "resnet18":
        stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1)]
        widths, blocks, cin = (64, 128, 256, 512), (2, 2, 2, 2), 64
    else:
        stem = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        widths, blocks, cin = (16, 32, 64), (3, 3, 3), 16
    layers = list(stem)
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for index in range(count):
            layers.append(Block(cin, width, 2 if index == 0 and stage > 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000 if kind ==
                                                                 "resnet18" else 10)]
    net = nn.Sequential(*layers)
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def calibration_images(image: tuple[int, ...]) -> np.ndarray:
    """The 8 random images both converters calibrate on."""
    return np.random.default_rng(0).random((8, *image), dtype=np.float32)


def build(kind: str, folder: Path) -> tuple[Path, tuple[int, ...]]:
    """The converted model and the image shape of ``kind``."""
    import torch

    from onnx_snn import convert

    image = (3, 224, 224) if kind == "resnet18" else (3, 32, 32)
    net = resnet(kind)
    ann, snn = folder / f"{kind}.onnx", folder / f"{kind}-snn.onnx"
    torch.onnx.export(net, torch.zeros(1, *image), str(ann), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                      dynamo=False)
    convert(str(ann), calibration_images(image), progress=False).save(snn)
    return snn, image


def child(model: Path | str, image: tuple, samples: int, steps: int, limit: str) -> dict:
    """Peak RSS, seconds and plan of one run in a fresh process (``limit``
    "spikingjelly": SpikingJelly's run of the net named ``model``)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(model), json.dumps(image),
                           str(samples), str(steps), limit, str(Path(__file__).parent)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fits_unchunked(model: Path, samples: int, steps: int) -> bool:
    from onnx_snn import SpikingSession
    from onnx_snn.runtime.memory import available_memory

    """Whether one call on all ``steps`` fits in 80 % of the available memory."""
    session = SpikingSession(model, memory_limit="1PB")
    return steps * samples * session.step_bytes < 0.8 * (available_memory() or 0)


def spikingjelly_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("spikingjelly") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="resnet18,resnet20")
    parser.add_argument("--timesteps", default="8,32,128,512,1024")
    parser.add_argument("--samples", default="resnet18=64,resnet20=64")
    parser.add_argument("--modes", default="limit,default,unchunked,spikingjelly")
    parser.add_argument("--limit", default="2GB")
    parser.add_argument("--json")
    args = parser.parse_args()
    samples = dict(item.split("=") for item in args.samples.split(","))
    rows = []
    print("| net | N | T | mode | peak RSS MB | s | us per sample-step | plan |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.nets.split(","):
            snn, image = build(kind, Path(folder))
            count = int(samples[kind])
            for steps in (int(t) for t in args.timesteps.split(",")):
                for mode in args.modes.split(","):
                    if mode == "unchunked" and not fits_unchunked(snn, count, steps):
                        result = {"error": "skipped: does not fit in memory unchunked"}
                    elif mode == "spikingjelly" and not spikingjelly_installed():
                        result = {"error": "skipped: spikingjelly is not installed"}
                    else:
                        limit = {"limit": args.limit, "default": "none", "unchunked": "1PB",
                                 "spikingjelly": "spikingjelly"}[mode]
                        result = child(kind if mode == "spikingjelly" else snn, image, count,
                                       steps, limit)
                    row = {"net": kind, "samples": count, "timesteps": steps, "mode": mode,
                           **result}
                    rows.append(row)
                    if "error" in row:
                        print(f"| {kind} | {count} | {steps} | {mode} | {row['error']} |||")
                    else:
                        per = 1e6 * row["seconds"] / (count * steps)
                        print(f"| {kind} | {count} | {steps} | {mode} | "
                              f"{row['peak_rss_mb']:.0f} | {row['seconds']:.1f} | {per:.0f} | "
                              f"{row['plan']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
