"""Output error of the SNN against the ANN on the random-weight architecture zoo.

The nets are those of ``tests/zoo_models.py`` (``ARCHITECTURES``: plain-torch,
randomly initialised ResNet-18/50, VGG-BN, DenseNet, Inception, SqueezeNet,
ShuffleNetV2, MobileNetV2 and a RegNet-style net on [N, 3, 32, 32], 10 classes, BN
running statistics from the zoo's 192 seeded images, last Linear rescaled so that
each logit is standardised over those images). Each is exported with the
TorchScript exporter (``ZooBuilder(cache).build(arch, "torchscript")``); an export
already in ``--cache`` (``<arch>-torchscript/ann.onnx``) is reused, so that runs
against two versions of the package can share the same ANN files.

For each net and each setting of ``--settings`` (preset names of
``onnx_snn.config.PRESETS``, default ``spikingjelly,best``):

- conversion: ``convert(ann, x_calib, preset=P, batch_size=100)``, where
  ``x_calib`` is the first ``--calibration`` (default 160) of ``zoo_images()``,
  i.e. the zoo's 192 images less the 32 held-out test images (the zoo's own
  ``calib.npz`` holds only the first 32 of them);
- SNN run: ``SpikingSession(snn.model).run(x, T)`` on the held-out images
  (``held_out_images()``, the last 32 of ``zoo_images()``; ``--samples N`` keeps the
  first N), in batches of ``--batch`` (default 8) images, for T = ``--timesteps``
  (default 256) steps; ``.per_step`` ([T, N, 10]) is summed over the steps as it
  comes, so the mean SNN output after t steps is read at every t of ``--at``
  (default 32, 64, 128, and T) from the same run;
- the ANN: the exported ``ann.onnx`` in onnxruntime on the same images.

Reported per net and setting, with m_t = the mean of the SNN output over steps
1..t and a = the ANN output (both [N, 10]):

- ``error`` at t = max over samples and classes of |m_t - a| / max|a| (the metric
  of issue 12: "the output error at T=128 is 0.5-1.3 x max|ANN|");
- ``r`` = the Pearson correlation of m_T with a (all N x 10 values flattened);
- ``agreement`` = the fraction of samples where argmax m_T = argmax a;
- ``convert s`` and ``run s``: wall time of the conversion and of the SNN runs.

A conversion or run that fails gives a row with the error message instead of
numbers. Prints one markdown table (net | setting | error at each t | r |
agreement | convert s | run s), headed by the command, the onnx_snn it imported
(path, version, IFNode backend) and the total wall time; ``--json FILE`` writes
the same numbers (and the errors, r and agreement at every t).

    python benchmarks/zoo_error.py [--nets resnet18,...] [--settings spikingjelly,best]
        [--timesteps 256] [--at 32,64,128] [--samples 32] [--calibration 160]
        [--batch 8] [--cache DIR] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from choices import backend, pick

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/zoo_models.py (tests/ is not a package)

EXPORTER = "torchscript"
CHECKPOINTS = (32, 64, 128)
CALIBRATION_BATCH = 100



def exported(arch: str, cache: Path) -> Path:
    """``<cache>/<arch>-torchscript/ann.onnx``, exported unless it is there already."""
    from zoo_models import ZooBuilder

    ann = cache / f"{arch}-{EXPORTER}" / "ann.onnx"
    if not ann.is_file():
        ann = ZooBuilder(cache).build(arch, EXPORTER).ann
    return ann



def snn_means(snn_model: Any, x: np.ndarray, timesteps: int, checkpoints: list[int],
              batch: int) -> np.ndarray:
    """[len(checkpoints), N, ...]: the SNN output averaged over steps 1..t for each t."""
    from onnx_snn import SpikingSession

    session = SpikingSession(snn_model)
    means = []
    for start in range(0, len(x), batch):
        per_step = np.asarray(session.run(x[start:start + batch], timesteps).per_step,
                              dtype=np.float64)                       # [T, n, ...]
        cumulative = np.cumsum(per_step, axis=0)
        means.append(np.stack([cumulative[t - 1] / t for t in checkpoints]))
    return np.concatenate(means, axis=1)


def scores(mean: np.ndarray, ann: np.ndarray) -> dict[str, float]:
    scale = float(np.abs(ann).max())
    return {"error": float(np.abs(mean - ann).max()) / scale,
            "r": float(np.corrcoef(mean.ravel(), ann.ravel())[0, 1]),
            "agreement": float((mean.argmax(-1) == ann.argmax(-1)).mean())}


def measure(ann: Path, setting: str, calibration: np.ndarray, x: np.ndarray,
            ann_out: np.ndarray, timesteps: int, checkpoints: list[int], batch: int) -> dict:
    from onnx_snn import convert

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "MaxPool kept over spikes" and the like
        snn = convert(str(ann), calibration, preset=setting, batch_size=CALIBRATION_BATCH,
                      progress=False)
    converted = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the native-kernel fallback warning, once
        means = snn_means(snn.model, x, timesteps, checkpoints, batch)
    ran = time.perf_counter()
    at = {t: scores(mean, ann_out) for t, mean in zip(checkpoints, means)}
    return {"error": {t: s["error"] for t, s in at.items()},
            "r": {t: s["r"] for t, s in at.items()},
            "agreement": {t: s["agreement"] for t, s in at.items()},
            "convert_s": converted - started, "run_s": ran - converted}


def main() -> None:
    from zoo_models import ARCHITECTURES, SAMPLES, TEST, held_out_images, ort_outputs, zoo_images

    from onnx_snn.config import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", help=f"comma-separated, from {','.join(ARCHITECTURES)} "
                        "(default all)")
    parser.add_argument("--settings", default="spikingjelly,best",
                        help=f"comma-separated preset names, from {','.join(PRESETS)} "
                             "(default spikingjelly,best)")
    parser.add_argument("--timesteps", type=int, default=256, help="T (default 256)")
    parser.add_argument("--at", default=",".join(map(str, CHECKPOINTS)),
                        help="smaller t at which the error is also read, from the same run "
                             "(default 32,64,128; those above T are dropped)")
    parser.add_argument("--samples", type=int, default=TEST,
                        help=f"held-out images scored (default all {TEST})")
    parser.add_argument("--calibration", type=int, default=SAMPLES - TEST,
                        help=f"calibration images: the first N of zoo_images(), at most "
                             f"{SAMPLES - TEST} (default), disjoint from the held-out ones")
    parser.add_argument("--batch", type=int, default=8, help="images per SNN run (default 8)")
    parser.add_argument("--cache", type=Path,
                        help="exported ANNs, reused when present (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    nets = pick(args.nets, list(ARCHITECTURES), "net")
    settings = pick(args.settings, list(PRESETS), "setting")
    if not 1 <= args.calibration <= SAMPLES - TEST:
        sys.exit(f"--calibration must be 1..{SAMPLES - TEST}")
    checkpoints = sorted({int(t) for t in args.at.split(",") if t.strip()
                          if 0 < int(t) < args.timesteps} | {args.timesteps})

    import onnxruntime
    import torch

    import onnx_snn

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="onnx-snn-zoo-"))
    cache.mkdir(parents=True, exist_ok=True)
    calibration = zoo_images()[:args.calibration]
    x = held_out_images()[:args.samples]

    results: dict[str, Any] = {}
    for arch in nets:
        ann = exported(arch, cache)
        ann_out = ort_outputs(ann, x)[0].astype(np.float64)
        rows = {}
        for setting in settings:
            try:
                row = measure(ann, setting, calibration, x, ann_out, args.timesteps,
                              checkpoints, args.batch)
                print(f"  {arch} | {setting}: error "
                      + " ".join(f"{row['error'][t]:.3f}" for t in checkpoints)
                      + f", r {row['r'][args.timesteps]:.3f}, agreement "
                      f"{row['agreement'][args.timesteps]:.3f} (convert "
                      f"{row['convert_s']:.1f} s, run {row['run_s']:.1f} s)", flush=True)
            except Exception as error:  # noqa: BLE001 - a failing net is a row, not a stop
                row = {"failed": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
                print(f"  {arch} | {setting}: failed: {row['failed']}", flush=True)
            rows[setting] = row
        results[arch] = {"max_abs_ann": float(np.abs(ann_out).max()), "rows": rows}

    command = " ".join(["python", "benchmarks/zoo_error.py", *sys.argv[1:]])
    package = (f"onnx_snn {onnx_snn.__version__} from {Path(onnx_snn.__file__).parent}, "
               f"IFNode backend: {backend()}")
    versions = (f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
                f"Python {platform.python_version()}, {args.threads} torch threads")
    wall = time.perf_counter() - started
    print()
    print(f"SNN output error against the ANN, max|mean_t SNN - ANN| / max|ANN| over "
          f"{len(x)} held-out images x 10 logits, T = {args.timesteps}; r and agreement "
          f"at T; `{command}`; calibration: the first {len(calibration)} zoo images, "
          f"batches of {CALIBRATION_BATCH}; {package}; {versions}; {wall:.0f} s in all.")
    print()
    print("| net | setting | " + " | ".join(f"error T={t}" for t in checkpoints)
          + " | r | agreement | convert s | run s |")
    print("|---|---|" + "---:|" * (len(checkpoints) + 4))
    for arch, result in results.items():
        for setting, row in result["rows"].items():
            if "failed" in row:
                print(f"| {arch} | {setting} | failed: {row['failed']} |"
                      + " |" * (len(checkpoints) + 3))
                continue
            T = args.timesteps
            print(f"| {arch} | {setting} | "
                  + " | ".join(f"{row['error'][t]:.3f}" for t in checkpoints)
                  + f" | {row['r'][T]:.3f} | {100 * row['agreement'][T]:.1f} % | "
                    f"{row['convert_s']:.1f} | {row['run_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(
            {"command": command, "package": package, "versions": versions,
             "timesteps": args.timesteps, "checkpoints": checkpoints, "samples": len(x),
             "calibration_samples": len(calibration), "wall_s": wall, "nets": results},
            indent=2))


if __name__ == "__main__":
    main()
