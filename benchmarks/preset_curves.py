"""Accuracy against T for both conversion presets, on two digits networks (README table).

Converts, with ``convert(ann, x_train, preset=P, batch_size=100)`` for
P = "spikingjelly" and "best":

(a) the digits BN-CNN of ``onnx_snn.demo.digits.train_digits_cnn`` (default 30 epochs);
(b) the residual CNN of ``examples/residual_digits.py`` (7 Conv, 3 residual Adds,
    one MaxPool after the stem; its default epochs),

both exported with the TorchScript exporter, calibrated on the 70 % training split
and evaluated on the 30 % test split (540 digits) at T = 1, 2, 4, ..., 64, from one
run at T = 64 per model. Prints a markdown table: accuracy (%) per T, and the ANN's.

    python benchmarks/preset_curves.py [--seed 0] [--cnn-epochs 30] [--residual-epochs N]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_residual_example() -> ModuleType:
    """Import ``examples/residual_digits.py`` by path (examples/ is not a package)."""
    name = "onnx_snn_example_residual_digits"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "residual_digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def configurations() -> dict[str, dict]:
    """The rows: both presets, and the classic conversion with the 99.9 % percentile."""
    from onnx_snn import HookFactory

    return {"spikingjelly (Max)": {"preset": "spikingjelly"},
            "spikingjelly, 99.9%": {"preset": "spikingjelly",
                                    "hook_factory": HookFactory("99.9%")},
            "best": {"preset": "best"}}


def curves(ann, data, timesteps) -> dict[str, dict[int, float]]:
    """{row: {T: test accuracy}} for ``ann``, calibrated on the training split."""
    from onnx_snn import convert
    from onnx_snn.measure.evaluation import snn_accuracy

    x_train, _, x_test, y_test = data
    result = {}
    for row, options in configurations().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "MaxPool kept over spikes" for spikingjelly
            snn = convert(ann, x_train, batch_size=100, progress=False, **options)
        result[row] = snn_accuracy(snn.model, x_test, y_test, timesteps)
    return result


def main() -> None:
    example = load_residual_example()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="data split and training seed")
    parser.add_argument("--cnn-epochs", type=int, default=30,
                        help="epochs for the BN-CNN (default 30, train_digits_cnn's default)")
    parser.add_argument("--residual-epochs", type=int, default=example.EPOCHS,
                        help=f"epochs for the residual CNN (default {example.EPOCHS}, the "
                             "example's)")
    args = parser.parse_args()

    import torch

    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export.torch import export_torch
    from onnx_snn.measure.evaluation import ann_accuracy

    timesteps = example.TIMESTEPS
    data = load_digits_split(seed=args.seed)
    x_train, y_train, x_test, y_test = data
    example_input = torch.from_numpy(x_train[:2])
    networks = {
        f"digits BN-CNN ({args.cnn_epochs} ep.)":
            lambda: train_digits_cnn(x_train, y_train, epochs=args.cnn_epochs, seed=args.seed),
        f"residual CNN ({args.residual_epochs} ep.)":
            lambda: example.train_residual_cnn(x_train, y_train, epochs=args.residual_epochs,
                                               seed=args.seed),
    }
    rows, started = [], time.perf_counter()
    for name, train in networks.items():
        ann = export_torch(train(), example_input, dynamo=False)
        accuracy = ann_accuracy(ann, x_test, y_test)
        for preset, curve in curves(ann, data, timesteps).items():
            rows.append(f"| {name} | {preset} | "
                        + " | ".join(f"{100 * curve[t]:.1f}" for t in timesteps)
                        + f" | {100 * accuracy:.1f} |")

    command = " ".join(["python", "benchmarks/preset_curves.py", *sys.argv[1:]])
    print(f"Digits test accuracy (%, {len(y_test)} images) against T; "
          f"`{command}` (seed {args.seed}; the residual CNN is `examples/residual_digits.py`, "
          f"also run by `python examples/residual_digits.py`); calibration: training split, "
          f"batches of 100; torch {torch.__version__}, Python {platform.python_version()}, "
          f"{time.perf_counter() - started:.0f} s in all.")
    print()
    print("| network | preset | " + " | ".join(f"T={t}" for t in timesteps) + " | ANN |")
    print("|---|---|" + "---:|" * (len(timesteps) + 1))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
