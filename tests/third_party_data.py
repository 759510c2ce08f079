"""Data for the third-party pretrained models of ``tests/test_third_party.py``.

The models are ONNX files shipped inside PyPI wheels (rapidocr-onnxruntime's
PaddleOCR nets, ddddocr's OCR net, swift-f0's pitch net); they are found with
``importlib.util.find_spec`` and never imported (rapidocr and ddddocr import cv2,
which they need only for their own pre-processing). The inputs are made here:
text rendered with PIL (Pillow's built-in scalable font, or matplotlib's DejaVu
Sans), and tones synthesised with numpy. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

#: Words for the OCR nets: short lower-case, capitalised and numeric strings.
WORDS = ("hello", "world", "spike", "neuron", "ONNX", "model", "Paddle", "OCR", "text",
         "2024", "river", "Berlin", "apple", "42", "train", "copy", "limit", "seven",
         "Green", "paper", "value", "1998", "north", "quick", "brown", "fox", "jumps",
         "lazy", "dog", "house", "Music", "data", "table", "531", "light", "sound")


def package_file(package: str, relative: str) -> Path | None:
    """The path of ``relative`` inside an installed package, or None when the
    package (or the file) is not there. The package is not imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    return None


# --- text -------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:
        pass
    try:
        import matplotlib
        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(ttf), size)
    except Exception:  # noqa: BLE001 - last resort: the bitmap font
        return ImageFont.load_default()


def render_text(text: str, height: int, font_size: int, *, pad: int = 4,
                ink: int = 0, paper: int = 255) -> np.ndarray:
    """``text`` in black on white, ``height`` rows high, as uint8 [height, width]."""
    from PIL import Image, ImageDraw
    font = _font(font_size)
    left, top, right, bottom = font.getbbox(text)
    width = right - left + 2 * pad
    image = Image.new("L", (max(width, 1), height), paper)
    ImageDraw.Draw(image).text((pad - left, (height - (bottom - top)) // 2 - top), text,
                               fill=ink, font=font)
    return np.asarray(image)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def paddle_norm(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """PaddleOCR's cls/rec pre-processing (rapidocr's ``resize_norm_img``): resize to
    ``height`` keeping the aspect ratio (at most ``width``), scale to [-1, 1], pad
    on the right with zeros; as float32 [3, height, width]."""
    h, w = gray.shape
    resized_w = min(width, int(math.ceil(height * w / h)))
    resized = _resize(gray, resized_w, height).astype(np.float32) / 255.0
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = (resized - 0.5) / 0.5
    return out


def _phrases(rng: np.random.Generator, count: int, words: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(count)]


def cls_data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs [count, 3, 48, 192] for PaddleOCR's text-orientation classifier and
    their labels: 0 for an upright text line, 1 for one turned by 180 degrees
    (the model's label list is ['0', '180']). Halves of each, interleaved."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for index, phrase in enumerate(_phrases(rng, count, 3)):
        image = render_text(phrase, 40, int(rng.integers(22, 30)))
        label = index % 2
        if label:
            image = image[::-1, ::-1]
        xs.append(paddle_norm(np.ascontiguousarray(image), 48, 192))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def rec_data(count: int, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    """Inputs [count, 3, 48, 320] for PaddleOCR's CRNN text recogniser and the
    rendered strings (one or two words)."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 3)))) for _ in range(count)]
    xs = [paddle_norm(render_text(text, 40, int(rng.integers(24, 30))), 48, 320)
          for text in texts]
    return np.stack(xs), texts


def ctc_decode(probs: np.ndarray, characters: list[str]) -> list[str]:
    """Greedy CTC decoding of [N, steps, classes] scores (class 0 the blank) into
    strings, with ``characters`` the model's list (index 0 = blank)."""
    best = probs.argmax(axis=-1)
    texts = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        texts.append("".join(characters[i] for i in row[keep]))
    return texts


def paddle_characters(model_path: str | Path) -> list[str]:
    """The character list of a PaddleOCR rec model (its metadata 'character'), with
    the blank first and a space last, as rapidocr builds it."""
    import onnx
    model = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ["blank"] + meta["character"].splitlines() + [" "]


def ddddocr_data(count: int, width: int = 160, seed: int = 2) -> tuple[np.ndarray, list[str]]:
    """Inputs [count, 1, 64, width] for ddddocr's OCR net (grey levels / 255) and
    the rendered strings (4-6 letters and digits, as in captchas)."""
    rng = np.random.default_rng(seed)
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    texts = ["".join(rng.choice(list(alphabet), size=int(rng.integers(4, 7))))
             for _ in range(count)]
    xs = []
    for text in texts:
        image = render_text(text, 64, int(rng.integers(34, 44)))
        xs.append(_resize(image, width, 64).astype(np.float32)[None] / 255.0)
    return np.stack(xs), texts


# --- audio ------------------------------------------------------------------------

#: swift-f0's sample rate, hop and pitch range (``swift_f0.core``).
SWIFT_RATE, SWIFT_HOP, SWIFT_FMIN, SWIFT_FMAX = 16000, 256, 46.875, 2093.75


def tones(count: int, samples: int = 8192, seed: int = 3,
          low: float = 80.0, high: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` harmonic tones of ``samples`` samples at 16 kHz, float32 [count,
    samples] in [-0.5, 0.5], and their pitches in Hz (log-uniform in [low, high])."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SWIFT_RATE
    pitches = np.exp(rng.uniform(np.log(low), np.log(high), count))
    audio = np.zeros((count, samples), np.float64)
    for row, f0 in enumerate(pitches):
        phase = rng.uniform(0, 2 * np.pi)
        for harmonic in range(1, 6):
            if harmonic * f0 < SWIFT_RATE / 2:
                audio[row] += np.sin(2 * np.pi * harmonic * f0 * t + phase) / harmonic
        audio[row] *= 0.5 / np.abs(audio[row]).max()
    return audio.astype(np.float32), pitches


def swift_feed(audio: np.ndarray) -> dict[str, np.ndarray]:
    """swift-f0's inputs for one clip [1, samples] (``SwiftF0._run``)."""
    return {"audio": np.asarray(audio, np.float32).reshape(1, -1),
            "fmin": np.asarray(SWIFT_FMIN, np.float32),
            "fmax": np.asarray(SWIFT_FMAX, np.float32)}


def cents(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|1200 log2(estimate / reference)|."""
    return np.abs(1200 * np.log2(np.maximum(estimate, 1e-6) / reference))
