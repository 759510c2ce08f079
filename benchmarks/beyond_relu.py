"""Accuracy against T and output error of the converted nets beyond ReLU.

The nets are those of ``tests/beyond_relu_models.py`` (``ARCHITECTURES``: plain-torch
ViT, EfficientNet, MobileNetV3, ConvNeXt and a BERT-style encoder with GELU, SiLU,
Hardswish, Hardsigmoid, LayerNorm, Softmax attention and products of two
activations), trained on scikit-learn's digits (70/30 stratified split,
``random_state=0``: 1257 training, 540 test digits; images [N, 1, 8, 8], tokens
[N, 16] for ``bert``). Each is built with
``BeyondReluBuilder(cache, reuse=True).build(arch, exporter)`` for each exporter
of ``--exporters`` (``dynamo``, ``torchscript``): trained once per net, exported,
with ``calib.npz`` (the first 200 training inputs) and ``test.npz`` (the test
inputs and their true labels). A build already in ``--cache`` (default
``~/.cache/onnx-snn/beyond-relu``) with the same ``RECIPE_VERSION`` is reused, so
that runs against two versions of the package share the same ANN files.

For each net and exporter:

- conversion with the default settings: ``convert(ann, calib_x, progress=False)``;
- accuracy: ``snn_accuracy(snn.model, x, y, [1, 2, 4, ..., 64], batch_size=100)``
  (direct encoding, one run at T = 64) on the first ``--test-samples`` (default all
  540) test inputs, against the true labels; ``ANN`` is the exported ``ann.onnx``
  on the same inputs in onnxruntime;
- output error at T = 16, 32, 64, 128 (``ERROR_STEPS``, one run at 128):
  ``SpikingSession(snn.model).run(x, 128).per_step`` ([T, N, 10]) averaged over steps
  1..t, m, against the ANN output a (both [N, 10]): max over samples and classes of
  |m - a| / max|a|; the same for the net converted with ``keep_analog=True``
  (nonlinear ops step by step, no signed neurons);
- the share of the ANN's MACs in layers that read spikes (``model_costs``: 1 −
  analog MACs / all MACs), and the neurons (signed ones in brackets).

A conversion or run that fails gives a row with the error message instead of
numbers. Prints one markdown table (net | exporter | ANN | T=1 ... T=64 | errors |
keep_analog errors | spike-driven MACs | neurons | convert s, accuracies in %),
headed by the command, the onnx_snn it imported
(path, version, IFNode backend) and the total wall time; ``--json FILE`` writes the
same numbers.

    python benchmarks/beyond_relu.py [--archs vit,...] [--exporters dynamo,torchscript]
        [--test-samples 540] [--cache DIR] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from choices import backend, pick

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/beyond_relu_models.py (tests/ is not a package)

TIMESTEPS = (1, 2, 4, 8, 16, 32, 64)
ERROR_STEPS = (16, 32, 64, 128)
EVAL_BATCH = 100
DEFAULT_CACHE = Path.home() / ".cache" / "onnx-snn" / "beyond-relu"




def output_errors(snn_model: Any, x: np.ndarray, ann_out: np.ndarray, batch: int
                  ) -> dict[int, float]:
    """max|mean SNN - ANN| / max|ANN| at each t of ERROR_STEPS, the SNN's first output
    averaged over steps 1..t (one run at the largest t)."""
    from onnx_snn.runtime.sessions import SpikingSession

    session = SpikingSession(snn_model)
    means = []
    for start in range(0, len(x), batch):
        per_step = np.asarray(session.run(x[start:start + batch], ERROR_STEPS[-1]).per_step,
                              dtype=np.float64)
        running = np.cumsum(per_step, axis=0) / np.arange(1, len(per_step) + 1)[:, None, None]
        means.append(running[[t - 1 for t in ERROR_STEPS]])
    mean = np.concatenate(means, axis=1)
    scale = float(np.abs(ann_out).max())
    return {t: float(np.abs(m - ann_out).max()) / scale for t, m in zip(ERROR_STEPS, mean)}


def measure(ann: Path, calibration: np.ndarray, x: np.ndarray, y: np.ndarray,
            ann_out: np.ndarray) -> dict:
    import onnx_snn
    from onnx_snn.measure.costs import model_costs
    from onnx_snn.measure.evaluation import snn_accuracy

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = onnx_snn.convert(str(ann), calibration, progress=False)
    converted = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the native-kernel fallback warning, once
        accuracy = snn_accuracy(snn.model, x, y, list(TIMESTEPS), batch_size=EVAL_BATCH)
        errors = output_errors(snn.model, x, ann_out, EVAL_BATCH)
        try:  # a net with no rectifier has nothing to convert without signed neurons
            analog = onnx_snn.convert(str(ann), calibration, keep_analog=True, progress=False)
            analog_errors = output_errors(analog.model, x, ann_out, EVAL_BATCH)
        except onnx_snn.OnnxSnnError:
            analog_errors = {}
    ran = time.perf_counter()
    costs = model_costs(snn.model, {"x": x[:1]})
    return {"accuracy": {int(t): float(a) for t, a in accuracy.items()},
            "error": errors, "keep_analog_error": analog_errors,
            "spike_driven_macs": 1 - costs.analog_macs / costs.total_macs,
            "signed_neurons": sum(bool(layer.neuron.signed) for layer in snn.layers),
            "neurons": len(snn.layers), "convert_s": converted - started,
            "run_s": ran - converted}


def main() -> None:
    from beyond_relu_models import (
        ARCHITECTURES,
        EXPORTERS,
        BeyondReluBuilder,
        ort_outputs,
        parameter_count,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", help=f"comma-separated, from {','.join(ARCHITECTURES)} "
                        "(default all)")
    parser.add_argument("--exporters", help=f"comma-separated, from {','.join(EXPORTERS)} "
                        "(default both)")
    parser.add_argument("--test-samples", type=int, default=540,
                        help="test inputs scored: the first N (default all 540)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"trained and exported nets, reused when present "
                             f"(default {DEFAULT_CACHE})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    archs = pick(args.archs, list(ARCHITECTURES), "architecture")
    exporters = pick(args.exporters, list(EXPORTERS), "exporter")
    if args.test_samples < 1:
        sys.exit("--test-samples must be at least 1")

    import onnxruntime
    import torch

    import onnx_snn

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    builder = BeyondReluBuilder(args.cache, reuse=True)

    results: dict[str, Any] = {}
    for arch in archs:
        for exporter in exporters:
            model = builder.build(arch, exporter)
            with np.load(model.calib) as calib, np.load(model.test) as test:
                calibration = calib["x"]
                x, y = test["x"][:args.test_samples], test["y"][:args.test_samples]
            ann_out = ort_outputs(model.ann, x)[0].astype(np.float64)
            row: dict[str, Any] = {"ann": float((ann_out.argmax(axis=1) == y).mean())}
            if arch in builder.train_seconds:
                row["train_s"] = builder.train_seconds[arch]
                row["parameters"] = parameter_count(builder.net(arch))
            try:
                row.update(measure(model.ann, calibration, x, y, ann_out))
                print(f"  {model.id}: ANN {100 * row['ann']:.1f} %, SNN "
                      + " ".join(f"{100 * a:.1f}" for a in row["accuracy"].values())
                      + " %, error " + " ".join(f"{e:.3f}" for e in row["error"].values())
                      + " (keep_analog " + " ".join(
                          f"{e:.3f}" for e in row["keep_analog_error"].values())
                      + f"), spike-driven MACs {100 * row['spike_driven_macs']:.1f} % (convert "
                      f"{row['convert_s']:.1f} s, run {row['run_s']:.1f} s)", flush=True)
            except Exception as error:  # noqa: BLE001 - a failing net is a row, not a stop
                message = str(error).splitlines()[0].replace("|", "/") if str(error) else ""
                row["failed"] = f"{type(error).__name__}: {message}" if message \
                    else type(error).__name__
                print(f"  {model.id}: ANN {100 * row['ann']:.1f} %, failed: {row['failed']}",
                      flush=True)
            results[model.id] = {"arch": arch, "exporter": exporter, **row}

    command = " ".join(["python", "benchmarks/beyond_relu.py", *sys.argv[1:]])
    package = (f"onnx_snn {onnx_snn.__version__} from {Path(onnx_snn.__file__).parent}, "
               f"IFNode backend: {backend()}")
    versions = (f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
                f"Python {platform.python_version()}, {args.threads} torch threads")
    wall = time.perf_counter() - started
    samples = min(args.test_samples, 540)
    print()
    print(f"Accuracy (%) of the converted nets (default settings) on {samples} digits "
          f"test inputs against T, and the output error max|mean SNN - ANN| / max|ANN| "
          f"at T = {', '.join(map(str, ERROR_STEPS))}, with default settings and with "
          f"keep_analog=True; the share of the ANN's MACs whose layer reads spikes; "
          f"`{command}`; calibration: the first 200 training inputs; "
          f"{package}; {versions}; {wall:.0f} s in all.")
    print()
    print("| model | exporter | ANN | " + " | ".join(f"T={t}" for t in TIMESTEPS)
          + " | error T=" + ", ".join(map(str, ERROR_STEPS))
          + " | keep_analog error | spike-driven MACs | neurons (signed) | convert s |")
    print("|---|---|" + "---:|" * (len(TIMESTEPS) + 6))
    for result in results.values():
        head = f"| {result['arch']} | {result['exporter']} | {100 * result['ann']:.1f} |"
        if "failed" in result:
            print(f"{head} failed: {result['failed']} |" + " |" * (len(TIMESTEPS) + 4))
            continue
        print(head + " " + " | ".join(f"{100 * a:.1f}" for a in result["accuracy"].values())
              + " | " + ", ".join(f"{e:.3f}" for e in result["error"].values())
              + " | " + (", ".join(f"{e:.3f}" for e in result["keep_analog_error"].values())
                         or "no Relu")
              + f" | {100 * result['spike_driven_macs']:.1f} % | {result['neurons']} "
              f"({result['signed_neurons']}) | {result['convert_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(
            {"command": command, "package": package, "versions": versions,
             "timesteps": list(TIMESTEPS), "error_at": list(ERROR_STEPS), "samples": samples,
             "wall_s": wall, "models": results}, indent=2))


if __name__ == "__main__":
    main()
