"""Peak memory of calibration with N and 10·N samples (issue: must stay < 1.2x).

Each run is a fresh Python process that converts a CNN on 3x32x32 inputs from an
.npz file (streamed, as the CLI does) and reports its own peak RSS (Linux VmHWM).

    python benchmarks/calibration_memory.py [--samples 2000] [--mode 99.9%]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# VmHWM, not ru_maxrss: ru_maxrss also counts the parent's memory at fork time.
CHILD = """
import json, re, sys, time
from pathlib import Path
from onnx_snn import HookFactory, convert
start = time.perf_counter()
result = convert(sys.argv[1], sys.argv[2], hook_factory=HookFactory(sys.argv[3]),
                 batch_size=100, progress=False)
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"peak_rss_mb": peak_kib / 1024, "samples": result.calibration.samples,
                  "seconds": time.perf_counter() - start}))
"""


def cnn(path: Path) -> None:
    """A VGG-like CNN with random weights, exported with a dynamic batch axis."""
    import torch
    from torch import nn

    from onnx_snn.export.torch import export_torch

    torch.manual_seed(0)
    layers, channels = [], 3
    for width in (32, 32, 64, 64):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    export_torch(net, torch.zeros(2, 3, 32, 32), path, dynamo=False)


def measure(model: Path, data: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(model), str(data), mode],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--mode", default="99.9%")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        cnn(folder / "cnn.onnx")
        results = {}
        for factor in (1, 10):
            data = folder / f"calib_{factor}.npz"
            count = factor * args.samples
            np.savez(data, x=rng.random((count, 3, 32, 32), dtype=np.float32))
            results[factor] = measure(folder / "cnn.onnx", data, args.mode)
            print(f"{count:>7} samples ({data.stat().st_size / 2**20:7.1f} MiB on disk): "
                  f"peak RSS {results[factor]['peak_rss_mb']:7.1f} MiB, "
                  f"{results[factor]['seconds']:6.1f} s")
    ratio = results[10]["peak_rss_mb"] / results[1]["peak_rss_mb"]
    print(f"peak RSS ratio 10x / 1x: {ratio:.3f} (target < 1.2)")


if __name__ == "__main__":
    main()
