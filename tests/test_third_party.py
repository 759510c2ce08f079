"""Pretrained networks trained by others, shipped inside PyPI wheels (the dev extras
install them; a test whose package is missing is skipped, saying which):

- rapidocr-onnxruntime 1.4.4: PaddleOCR's text-orientation classifier (MobileNetV3:
  hardswish, squeeze-excite, weights as Constant nodes; paddle2onnx) and its CRNN
  text recogniser (CTC);
- ddddocr 1.6.1: a captcha OCR net (SiLU CNN + bidirectional LSTM, time-major output
  [steps, 1, classes] declared as [1, seqlen], fixed batch 1, dynamic width);
- swift-f0 0.3.0: a pitch net (STFT in the graph, an integer Clip on an index path, a
  float64 head, scalar inputs ``fmin``/``fmax``, fixed batch 1).

Only their ONNX files are read; the packages are never imported. The inputs are made
in ``tests/third_party_data.py`` (rendered text, synthesised tones).

Each model converts with the default settings, is written with ``SpikingModel.save``
and loads in plain onnxruntime (no custom-op library). Then its task metric, with the
setting that reaches the ANN, is compared with the ANN's own on the same inputs (the
ANN run in onnxruntime): the SNN's mean output over 64 steps must score within one
point. ``benchmarks/third_party.py`` measures every setting at T = 8 ... 128.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from third_party_data import (
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

import onnx_snn
from onnx_snn import SpikingSession
from onnx_snn.calibration.factories import HookFactory
from onnx_snn.config import PRESETS

CLS = ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
       "rapidocr-onnxruntime==1.4.4")
REC = ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx",
       "rapidocr-onnxruntime==1.4.4")
DDDDOCR = ("ddddocr", "common.onnx", "ddddocr==1.6.1")
SWIFT = ("swift_f0", "model.onnx", "swift-f0==0.3.0")
#: ``--preset best``, ``--preset best --max-spikes 4`` (burst neurons) and
#: ``--preset best --mode max --max-spikes 16`` (per-layer max scales, finer bursts).
BEST = {"preset": "best"}
BURST = {"preset": "best", "neuron_factory": PRESETS["best"].neuron_factory.replace(max_spikes=4)}
MAX16 = {"preset": "best", "hook_factory": HookFactory(),
         "neuron_factory": PRESETS["best"].neuron_factory.replace(max_spikes=16)}
STEPS = 64


def model_file(which: tuple[str, str, str]) -> str:
    """The model's path, or a skip naming the package to install."""
    package, relative, requirement = which
    path = package_file(package, relative)
    if path is None:
        pytest.skip(f"{requirement} is not installed (pip install -e '.[dev]'): "
                    f"no {package}/{relative}")
    return str(path)


def ann_run(path: str, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Every output of the ANN for each feed, in plain onnxruntime."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ddddocr declares its output [1, seqlen]: a warning
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def converted(ann: str, data, tmp_path, **settings) -> str:
    """Convert, write the model, load it in plain onnxruntime; the written path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # caveats (MaxPool over spikes) are not failures
        result = onnx_snn.convert(ann, data, progress=False, **settings)
    path = str(tmp_path / "snn.onnx")
    result.save(path)
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return path


def snn_means(path: str, feeds: list[dict[str, np.ndarray]], steps: int = STEPS
              ) -> list[list[np.ndarray]]:
    """Every output of the SNN for each feed, averaged over ``steps`` steps."""
    session = SpikingSession(path)
    return [[np.asarray(o, np.float64).mean(axis=0)
             for o in session.run(feed, steps).outputs.values()] for feed in feeds]


# --- PaddleOCR text orientation (class scores) --------------------------------------

def cls_case(count: int):
    x, labels = cls_data(count, seed=0)  # labels: the known rotation (0 or 180 degrees)
    feeds = [{"x": x[i:i + 20]} for i in range(0, count, 20)]
    return feeds, lambda outputs: float(np.mean(
        np.concatenate([o[0].argmax(axis=-1) for o in outputs]) == labels))


def test_paddle_cls_converts_by_default_and_loads(tmp_path):
    converted(model_file(CLS), cls_data(16, seed=10)[0], tmp_path)


def test_paddle_cls_reaches_the_ann_with_burst_neurons(tmp_path):
    """``--preset best --max-spikes 4``: 93 % at T = 16, 96 % at T = 64 on 100 lines
    (the ANN: 94 %; benchmarks/third_party.py)."""
    ann = model_file(CLS)
    snn = converted(ann, cls_data(32, seed=10)[0], tmp_path, **BURST)
    feeds, accuracy = cls_case(20)
    ann_accuracy, snn_accuracy = accuracy(ann_run(ann, feeds)), accuracy(snn_means(snn, feeds))
    assert ann_accuracy >= 0.9, "the rendered text lines are not what the ANN reads"
    assert snn_accuracy >= ann_accuracy - 0.01, (ann_accuracy, snn_accuracy)


# --- PaddleOCR CRNN recogniser (CTC sequence) ---------------------------------------

def test_paddle_rec_converts_by_default_and_loads(tmp_path):
    converted(model_file(REC), rec_data(8, seed=11)[0], tmp_path)


@pytest.mark.slow
def test_paddle_rec_reads_the_text_as_the_ann_does(tmp_path):
    ann = model_file(REC)
    snn = converted(ann, rec_data(16, seed=11)[0], tmp_path, **MAX16)
    x, texts = rec_data(16, seed=1)
    feeds = [{"x": x[i:i + 4]} for i in range(0, len(x), 4)]
    characters = paddle_characters(ann)

    def exact(outputs) -> float:
        reads = [read for o in outputs for read in ctc_decode(o[0], characters)]
        return float(np.mean([read == text for read, text in zip(reads, texts)]))

    ann_read, snn_read = exact(ann_run(ann, feeds)), exact(snn_means(snn, feeds))
    assert snn_read >= ann_read - 0.01, (ann_read, snn_read)


# --- ddddocr (time-major CTC scores, LSTM) -----------------------------------------

def ctc_path(scores: np.ndarray) -> list[int]:
    """Greedy CTC decoding of time-major scores [steps, 1, classes] to class indices
    (ddddocr's character list ships as Python code: the indices are compared)."""
    best = scores.reshape(scores.shape[0], -1).argmax(axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    return best[keep & (best != 0)].tolist()


def ddddocr_batches(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """One image a batch: the model was exported at batch 1."""
    x, _ = ddddocr_data(count, seed=seed)
    return [{"input1": x[i:i + 1]} for i in range(count)]


def test_ddddocr_converts_by_default_and_loads(tmp_path):
    converted(model_file(DDDDOCR), ddddocr_batches(4, seed=12), tmp_path)


def test_ddddocr_reads_as_the_ann_with_burst_neurons(tmp_path):
    """``--preset best --max-spikes 4``: the ANN's reading of all 16 captchas from T = 32
    (benchmarks/third_party.py)."""
    ann = model_file(DDDDOCR)
    snn = converted(ann, ddddocr_batches(8, seed=12), tmp_path, **BURST)
    feeds = ddddocr_batches(6, seed=2)
    anns = ann_run(ann, feeds)
    same = [ctc_path(m[0]) == ctc_path(a[0]) for m, a in zip(snn_means(snn, feeds), anns)]
    assert np.mean(same) >= 0.99, same


# --- swift-f0 (pitch regression, scalar inputs, float64 head) -----------------------

def swift_feeds(count: int, seed: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """One clip a batch, with the scalar band limits fmin and fmax, as swift_f0 feeds
    it; and the tones' pitches."""
    audio, pitches = tones(count, seed=seed)
    return [swift_feed(clip) for clip in audio], pitches


def test_swift_f0_converts_by_default_and_loads(tmp_path):
    snn = converted(model_file(SWIFT), swift_feeds(4, seed=13)[0], tmp_path)
    session = ort.InferenceSession(snn, providers=["CPUExecutionProvider"])
    assert {"pitch", "confidence"} <= {o.name for o in session.get_outputs()}
    assert {i.name: i.shape for i in session.get_inputs()}["fmin"] == []


def test_swift_f0_finds_the_pitch_as_the_ann_does(tmp_path):
    """``--preset best``: every frame within 50 cents of the tone from T = 32
    (benchmarks/third_party.py)."""
    ann = model_file(SWIFT)
    snn = converted(ann, swift_feeds(8, seed=13)[0], tmp_path, **BEST)
    feeds, pitches = swift_feeds(4, seed=3)

    def hits(outputs) -> float:  # output 0: pitch [1, frames] (float64)
        return float(np.mean([cents(o[0][0], f) < 50 for o, f in zip(outputs, pitches)]))

    ann_hits, snn_hits = hits(ann_run(ann, feeds)), hits(snn_means(snn, feeds))
    assert ann_hits >= 0.9, "the tones are not what the ANN tracks"
    assert snn_hits >= ann_hits - 0.01, (ann_hits, snn_hits)
