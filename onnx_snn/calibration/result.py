"""The result of calibration: one scale per Relu, checked, saved and loaded as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnx_snn.calibration.modes import Mode
from onnx_snn.errors import OnnxSnnError, first_line
from onnx_snn.io.outputs import write_json
from onnx_snn.io.reading import read_regular, shown
from onnx_snn.snn.rewrite import Scale
from onnx_snn.validation import FLOAT32_MAX, FLOAT32_TINY, is_number

#: The most scales a calibration file may hold (one per channel of every Relu), and
#: the most bytes of JSON one takes ("-1.2345678901234567e-308, " and room to spare):
#: a longer file is refused before it is read.
MAX_SCALES = 1 << 23
BYTES_PER_SCALE = 32
MAX_CALIBRATION_BYTES = MAX_SCALES * BYTES_PER_SCALE


@dataclass
class LayerCalibration:
    """The calibrated scale of one Relu (a float, or an array per channel) and the
    settings that produced it."""

    node: str
    scale: Scale
    mode: Mode
    momentum: float | None


@dataclass
class Calibration:
    """Scales of every calibrated Relu, in graph order; saved and loaded as JSON.

    ``batches`` and ``samples`` count one pass over the data, ``passes`` the passes
    (one per layer depth for threshold balancing, which balances layer by layer).
    """

    layers: list[LayerCalibration] = field(default_factory=list)
    batches: int = 0
    samples: int = 0
    passes: int = 1

    @property
    def scales(self) -> dict[str, Scale]:
        return {layer.node: layer.scale for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        layers = [{**asdict(layer), "scale": np.asarray(layer.scale).tolist()}
                  for layer in self.layers]
        return {"batches": self.batches, "samples": self.samples, "passes": self.passes,
                "layers": layers}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        """Read a calibration written by ``save``: a regular file of at most
        ``MAX_CALIBRATION_BYTES``."""
        text = read_regular(Path(path), "calibration file", MAX_CALIBRATION_BYTES)
        try:
            data = json.loads(text)
            layers = [LayerCalibration(_node_from_json(e["node"]),
                                       _scale_from_json(e["scale"], e["node"]), e["mode"],
                                       None if e["momentum"] is None else float(e["momentum"]))
                      for e in data["layers"]]
            return cls(layers, int(data.get("batches", 0)), int(data.get("samples", 0)),
                       int(data.get("passes", 1)))
        except RecursionError as error:
            raise OnnxSnnError(f"{shown(path)}: not a calibration file (its JSON is nested too "
                               "deeply; a calibration nests 4 levels)") from error
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise OnnxSnnError(f"{shown(path)}: not a calibration file "
                               f"({first_line(error)})") from error


def _describe(scale: Scale) -> str:
    if np.ndim(scale) == 0:
        return f"{float(scale):g}"
    values = np.asarray(scale)
    return f"per channel, min {values.min():g}, max {values.max():g}"


def _node_from_json(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a node name must be a string, got {json.dumps(value)[:60]}")
    return value


def _scale_from_json(value: Any, node: str) -> Scale:
    """A scale as saved: a number, or a non-empty list of numbers (one per channel)."""
    if isinstance(value, list):
        if not value or not all(is_number(v) for v in value):
            raise ValueError(f"the scale of {node!r} must be a number or a non-empty list of "
                             f"numbers, got {json.dumps(value)[:60]}")
        return np.asarray(value, dtype=np.float64)
    if not is_number(value):
        raise ValueError(f"the scale of {node!r} must be a number, got {value!r}")
    return float(value)


def check_scales(calibration: Calibration) -> None:
    """Refuse scales that would divide by zero, are not finite or leave float32's
    normal range, naming every Relu.

    Per channel, a channel with scale 0 never activated and stays silent; only a
    layer whose channels are all 0, or any other bad value, is refused.
    """
    def usable(scale: Scale) -> bool:
        values = np.asarray(scale, dtype=np.float64)
        return bool(np.isfinite(values).all() and (values >= 0).all() and (values > 0).any())

    bad = [f"{layer.node!r} ({_describe(layer.scale)})" for layer in calibration.layers
           if not usable(layer.scale)]
    if bad:
        raise OnnxSnnError(
            f"Relu {', '.join(bad)}: scale must be finite and > 0 (the Relu never activated "
            "on the calibration data, or the percentile is too low); use more representative "
            "data, another mode, or exclude them")
    extreme = [f"{layer.node!r} ({_describe(layer.scale)})" for layer in calibration.layers
               if not _in_float32_range(layer.scale)]
    if extreme:
        raise OnnxSnnError(f"Relu {', '.join(extreme)}: a scale must lie within float32's "
                           f"normal range [{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}] (or be 0 "
                           "for a silent channel)")


def _in_float32_range(scale: Scale) -> bool:
    values = np.asarray(scale, dtype=np.float64)
    positive = values[values > 0]
    return bool(((positive >= FLOAT32_TINY) & (positive <= FLOAT32_MAX)).all())
