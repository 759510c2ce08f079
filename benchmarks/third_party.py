"""Pretrained third-party nets (weights shipped in PyPI wheels) against their ANN, per
setting and T: the task metric each reaches, and the T it needs.

The models and their data are those of ``tests/test_third_party.py`` (made in
``tests/third_party_data.py``: rendered text, synthesised tones):

- ``cls``: PaddleOCR's text-orientation classifier (rapidocr-onnxruntime 1.4.4;
  MobileNetV3 with hardswish and squeeze-excite): accuracy on upright or turned text
  lines, against the known rotation;
- ``rec``: PaddleOCR's CRNN recogniser (CTC): exact strings, greedy CTC decoding;
- ``ddddocr``: ddddocr 1.6.1's captcha net (SiLU CNN, bidirectional LSTM,
  time-major CTC output, batch 1): strings read as the ANN reads them (its
  character list ships as Python code in the package, which is not imported);
- ``swift``: swift-f0 0.3.0's pitch net (STFT in the graph, scalar inputs, float64
  head): frames within 50 cents of the tone.

Each setting of ``--settings`` converts with ``onnx_snn.convert`` (``default``:
no options; ``best``: ``preset="best"``; ``burst``, ``burst8``: ``preset="best"``
with burst neurons of up to 4 or 8 spikes a step; ``burst16max``: ``preset="best"``
with per-layer max scales instead of threshold balancing and up to 16 spikes a
step), runs the SNN once at the largest
T of ``--timesteps`` and reads the metric of the mean output over steps 1..t at every
t. Calibration data is made with other seeds than the test data.

    python benchmarks/third_party.py [--models cls,rec,ddddocr,swift]
        [--settings default,best,burst] [--timesteps 8,16,32,64,128] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)  # ddddocr declares its output [1, seqlen]: a warning

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/third_party_data.py (tests/ is not a package)

from third_party_data import (  # noqa: E402
    cents,
    cls_data,
    ctc_decode,
    ddddocr_data,
    package_file,
    paddle_characters,
    rec_data,
    swift_feed,
    tones,
)

from onnx_snn import SpikingSession, convert  # noqa: E402
from onnx_snn.calibration.factories import HookFactory  # noqa: E402
from onnx_snn.config import PRESETS  # noqa: E402

#: As the CLI's ``convert`` (no option), ``--preset best``, ``--preset best --max-spikes 4``,
#: ``--max-spikes 8`` and ``--preset best --mode max --max-spikes 16``.
SETTINGS = {"default": {}, "best": {"preset": "best"},
            "burst": {"preset": "best",
                      "neuron_factory": PRESETS["best"].neuron_factory.replace(max_spikes=4)},
            "burst8": {"preset": "best",
                       "neuron_factory": PRESETS["best"].neuron_factory.replace(max_spikes=8)},
            "burst16max": {"preset": "best", "hook_factory": HookFactory(),
                           "neuron_factory": PRESETS["best"].neuron_factory.replace(
                               max_spikes=16)}}
FILES = {"cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
         "rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
         "ddddocr": ("ddddocr", "common.onnx"),
         "swift": ("swift_f0", "model.onnx")}


def task(name: str, path: str, samples: int):
    """(calibration data, test feeds, metric): ``metric(outputs, ann_outputs)`` scores
    one list of outputs per feed (the ANN's are given to score against)."""
    if name == "cls":
        x_calib, _ = cls_data(32, seed=10)
        x, labels = cls_data(samples, seed=0)
        feeds = [{"x": x[i:i + 20]} for i in range(0, len(x), 20)]
        return x_calib, feeds, lambda outs, _: float(np.mean(
            np.concatenate([o[0].argmax(axis=-1) for o in outs]) == labels))
    if name == "rec":
        characters = paddle_characters(path)
        x_calib, _ = rec_data(16, seed=11)
        x, texts = rec_data(samples, seed=1)
        feeds = [{"x": x[i:i + 4]} for i in range(0, len(x), 4)]
        return x_calib, feeds, lambda outs, _: float(np.mean(
            [read == text for read, text in
             zip([r for o in outs for r in ctc_decode(o[0], characters)], texts)]))
    if name == "ddddocr":  # its character list ships as Python code: compare index paths
        x_calib, _ = ddddocr_data(8, seed=12)
        x, _ = ddddocr_data(samples, seed=2)
        calib = [{"input1": x_calib[i:i + 1]} for i in range(len(x_calib))]
        feeds = [{"input1": x[i:i + 1]} for i in range(len(x))]
        return calib, feeds, lambda outs, anns: float(np.mean(
            [_ctc_path(o[0]) == _ctc_path(a[0]) for o, a in zip(outs, anns)]))
    audio_calib, _ = tones(8, seed=13)
    audio, pitches = tones(samples, seed=3)
    return [swift_feed(clip) for clip in audio_calib], [swift_feed(clip) for clip in audio], \
        lambda outs, _: float(np.mean([cents(o[0][0], f) < 50 for o, f in zip(outs, pitches)]))


def _ctc_path(scores: np.ndarray) -> list[int]:
    """Greedy CTC decoding of time-major scores [steps, 1, classes] to class indices."""
    best = scores.reshape(scores.shape[0], -1).argmax(axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    return best[keep & (best != 0)].tolist()


def run(name: str, setting: str, timesteps: list[int], samples: int) -> dict:
    path = str(package_file(*FILES[name]))
    calib, feeds, metric = task(name, path, samples)
    ann = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ann_outputs = [ann.run(None, feed) for feed in feeds]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(path, calib, progress=False, **SETTINGS[setting]).model
    converted = time.perf_counter() - started
    session = SpikingSession(snn)
    sums = []
    for feed in feeds:
        outputs = session.run(feed, max(timesteps)).outputs
        sums.append([np.cumsum(o, axis=0, dtype=np.float64) for o in outputs.values()])
    curve = {t: metric([[s[t - 1] / t for s in run_sums] for run_sums in sums], ann_outputs)
             for t in timesteps}
    return {"model": name, "setting": setting, "samples": samples,
            "ann": metric(ann_outputs, ann_outputs), "snn": curve,
            "convert_s": round(converted, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cls,rec,ddddocr,swift")
    parser.add_argument("--settings", default="default,best,burst")
    parser.add_argument("--timesteps", default="8,16,32,64,128")
    parser.add_argument("--samples", default="cls=100,rec=16,ddddocr=16,swift=8")
    parser.add_argument("--json")
    args = parser.parse_args()
    timesteps = sorted(int(t) for t in args.timesteps.split(","))
    samples = dict(item.split("=") for item in args.samples.split(","))
    rows = []
    for name in args.models.split(","):
        if package_file(*FILES[name]) is None:
            print(f"{name}: {FILES[name][0]} is not installed (pip install the dev extras)")
            continue
        for setting in args.settings.split(","):
            row = run(name, setting, timesteps, int(samples[name]))
            rows.append(row)
            curve = "  ".join(f"{100 * v:5.1f}" for v in row["snn"].values())
            print(f"{name:8s} {setting:8s} ANN {100 * row['ann']:5.1f}  SNN at T = "
                  f"{','.join(map(str, timesteps))}: {curve}  (convert {row['convert_s']} s, "
                  f"{row['samples']} samples)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
