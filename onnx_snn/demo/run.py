"""The built-in demo: train a BN-CNN on digits, convert it, compare accuracies."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.api import convert
from onnx_snn.calibration.factories import HookFactory
from onnx_snn.io.models import stage_model
from onnx_snn.io.outputs import OutputSet
from onnx_snn.measure.evaluation import ann_accuracy, snn_accuracy

DEMO_TIMESTEPS = (4, 8, 16, 32, 64)


def run_demo(out_dir: str | Path | None = None, mode: str = "99.9%", momentum: float = 0.1,
             batch_size: int = 100, seed: int = 0, echo=print,
             outputs: OutputSet | None = None) -> dict[str, Any]:
    """Train, export, convert and evaluate; print progress with ``echo``.

    Calibration uses the training split (70 %), evaluation the test split. With
    ``out_dir`` the ANN, the SNN and the data are written there, all together
    (staged in ``outputs`` when given, to be committed by the caller).
    """
    import torch

    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export.torch import export_torch

    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start
        echo(f"  {name:<10} {timings[name]:6.2f} s")

    echo("onnx-snn demo: a BN-CNN on scikit-learn's digits (8x8, 70/30 split)")
    with stage("data"):
        x_train, y_train, x_test, y_test = load_digits_split(seed=seed)
    with stage("train"):
        network = train_digits_cnn(x_train, y_train, seed=seed)
    with stage("export"):
        ann = export_torch(network, torch.from_numpy(x_train[:2]))
    with stage("convert"):
        snn = convert(ann, x_train, hook_factory=HookFactory(mode, momentum),
                      batch_size=batch_size, progress=False)
    with stage("evaluate"):
        ann_acc = ann_accuracy(ann, x_test, y_test)
        snn_acc = snn_accuracy(snn.model, x_test, y_test, DEMO_TIMESTEPS)
    if out_dir is not None:
        out = Path(out_dir)
        with OutputSet() as own:
            staging = outputs or own
            staging.make_folders(out)  # removed again if the outputs are discarded
            stage_model(staging, ann, out / "digits_ann.onnx")
            snn.save(out / "digits_snn.onnx", report=out / "digits_snn.json", outputs=staging)
            for name, (x, y) in {"digits_test.npz": (x_test, y_test),
                                 "digits_train.npz": (x_train, y_train)}.items():
                staging.add_file(out / name, lambda staged, x=x, y=y: _save_npz(staged, x, y))
        echo(f"  wrote ANN, SNN, report and data to {out}")

    echo(f"\nANN accuracy: {ann_acc:.4f}")
    echo("SNN accuracy (calibration mode "
         f"{mode}, momentum {momentum}, batches of {batch_size}):")
    for t, acc in snn_acc.items():
        echo(f"  T = {t:>3}: {acc:.4f}  ({100 * (acc - ann_acc):+.2f} points)")
    return {"ann_accuracy": ann_acc, "snn_accuracy": {str(t): a for t, a in snn_acc.items()},
            "timings_s": timings, "layers": snn.report()["layers"]}


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.savez would add ".npz" to the name
        np.savez(handle, x=x, y=y)
