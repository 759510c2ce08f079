"""Calibration: run the ANN in onnxruntime and collect one scale per Relu (SPEC §2).

Each converted Relu gets its own statistic collector (``VoltageHook``), made by
``HookFactory.create()``. A hook adds its reduction to a calibration copy of the
graph, so onnxruntime returns a few numbers per batch instead of whole
activation tensors: ``ReduceMax`` for "Max" and fractions of the max, ``TopK``
of just the elements a percentile needs. Across batches the hook keeps an
exponential moving average. Memory stays at one batch plus a scalar per Relu.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from tqdm.auto import tqdm

from onnx_snn.data import batches, input_specs
from onnx_snn.errors import OnnxSnnError
from onnx_snn.modelio import save_json
from onnx_snn.prepare import infer_shapes

Mode = Union[str, float]


def parse_mode(mode: Mode) -> tuple[str, float | None]:
    """``("max", None)``, ``("percentile", P)`` or ``("fraction", f)``; errors otherwise."""
    problem = (f"calibration mode {mode!r} is not valid: use 'Max', a percentile such as "
               "'99.9%' (0-100), or a number in (0, 1]")
    if isinstance(mode, str):
        text = mode.strip()
        if text.lower() == "max":
            return "max", None
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                raise OnnxSnnError(problem) from None
            if 0.0 <= percent <= 100.0:
                return "percentile", percent
        raise OnnxSnnError(problem)
    if isinstance(mode, (int, float, np.integer, np.floating)) and not isinstance(mode, bool):
        fraction = float(mode)
        if 0.0 < fraction <= 1.0:
            return "fraction", fraction
    raise OnnxSnnError(problem)


def check_momentum(momentum: float) -> float:
    """The momentum as a float in [0, 1]; errors otherwise."""
    valid = isinstance(momentum, (int, float, np.integer, np.floating)) \
        and not isinstance(momentum, bool) and 0.0 <= float(momentum) <= 1.0
    if not valid:
        raise OnnxSnnError(f"momentum {momentum!r} is not valid: use a number in [0, 1]")
    return float(momentum)


def numpy_linear_percentile(n: int, percent: float, sorted_at) -> np.floating:
    """``np.percentile(a, percent)`` (linear method) given ``sorted_at(j)``, the j-th
    smallest element of ``a`` (size ``n``). Follows numpy's arithmetic step by step,
    so the result is identical, while only two elements need to be known."""
    virtual = (n - 1) * np.true_divide(percent, 100)
    if virtual >= n - 1:
        return sorted_at(n - 1)
    below = int(np.floor(virtual))
    gamma = float(virtual - below)
    low, high = sorted_at(below), sorted_at(below + 1)
    diff = high - low
    if gamma >= 0.5:
        return high - diff * (1 - gamma)
    return low + diff * gamma


class VoltageHook:
    """Collects the scale of one Relu's output over calibration batches.

    Per batch it computes a statistic ``s_t`` over the whole output tensor
    (batch axis included), then ``scale = s_t`` for the first batch and
    ``scale = (1 - momentum) * scale + momentum * s_t`` after that.
    """

    def __init__(self, mode: Mode = "Max", momentum: float = 0.1) -> None:
        self.mode = mode
        self.kind, self.value = parse_mode(mode)
        self.momentum = check_momentum(momentum)
        self.scale: float | None = None
        self.batches = 0

    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        """Add this hook's reduction of ``activation`` to ``graph``; return what to fetch."""
        prefix = f"{activation.name}__calib"
        if self.kind != "percentile":
            return graph.layer(op="ReduceMax", name=f"{prefix}_max", inputs=[activation],
                               outputs=[gs.Variable(f"{prefix}_max", activation.dtype, [])],
                               attrs={"keepdims": 0})
        return self._percentile_outputs(graph, activation, prefix)

    def _percentile_outputs(self, graph: gs.Graph, activation: gs.Variable,
                            prefix: str) -> list[gs.Variable]:
        """TopK of the elements around the percentile's rank, and the element count."""
        def layer(op: str, inputs: list, dtype, attrs: dict | None = None) -> gs.Variable:
            name = f"{prefix}_{op.lower()}{len(graph.nodes)}"
            out = gs.Variable(name, dtype)
            graph.layer(op=op, name=name, inputs=inputs, outputs=[out], attrs=attrs or {})
            return out

        def const(name: str, value) -> gs.Constant:
            return gs.Constant(f"{prefix}_{name}", np.asarray(value))

        q = self.value / 100.0
        count = layer("Size", [activation], np.int64)
        index = layer("Mul", [layer("Sub", [layer("Cast", [count], np.float64,
                                                          {"to": onnx.TensorProto.DOUBLE}),
                                            const("one", 1.0)], np.float64),
                              const("q", q)], np.float64)
        below = layer("Cast", [layer("Floor", [index], np.float64)], np.int64,
                      {"to": onnx.TensorProto.INT64})
        largest = q >= 0.5
        # One element of margin on each side absorbs any rounding between the
        # graph's index and numpy's; the exact neighbours are picked on the host.
        wanted = (layer("Add", [layer("Sub", [count, below], np.int64), const("margin", 1)],
                        np.int64) if largest
                  else layer("Add", [below, const("margin", 3)], np.int64))
        k = layer("Reshape", [layer("Min", [wanted, count], np.int64), const("k_shape", [1])],
                  np.int64)
        flat = layer("Reshape", [activation, const("flat", [-1])], activation.dtype)
        values = gs.Variable(f"{prefix}_topk", activation.dtype)
        graph.layer(op="TopK", name=f"{prefix}_topk", inputs=[flat, k],
                    outputs=[values, gs.Variable(f"{prefix}_topk_index", np.int64)],
                    attrs={"largest": int(largest), "sorted": 1})
        return [values, count]

    def statistic(self, fetched: list[np.ndarray]) -> float:
        """This batch's ``s_t`` from the fetched reduction results."""
        if self.kind == "max":
            return float(fetched[0])
        if self.kind == "fraction":
            return float(fetched[0]) * self.value
        values, count = fetched[0], int(fetched[1])
        if self.value / 100.0 >= 0.5:
            return float(numpy_linear_percentile(count, self.value,
                                                 lambda j: values[count - 1 - j]))
        return float(numpy_linear_percentile(count, self.value, lambda j: values[j]))

    def update(self, s_t: float) -> None:
        """Fold one batch's statistic into the moving average."""
        if self.scale is None:
            self.scale = s_t
        else:
            self.scale = (1.0 - self.momentum) * self.scale + self.momentum * s_t
        self.batches += 1


class HookFactory:
    """Makes a fresh ``VoltageHook`` for each Relu that is converted.

    ``mode``: "Max" (any case), a percentile "P%" with 0 <= P <= 100, or a
    number f in (0, 1] meaning f times the maximum. ``momentum`` in [0, 1]
    weights each new batch in the moving average. Bad settings are rejected
    here, not at calibration time.
    """

    def __init__(self, mode: Mode = "Max", momentum: float = 0.1) -> None:
        parse_mode(mode)
        check_momentum(momentum)
        self.mode = mode
        self.momentum = momentum

    def create(self) -> VoltageHook:
        """A new, empty collector."""
        return VoltageHook(mode=self.mode, momentum=self.momentum)


@dataclass
class LayerCalibration:
    """The calibrated scale of one Relu and the settings that produced it."""

    node: str
    scale: float
    mode: Mode
    momentum: float


@dataclass
class Calibration:
    """Scales of every calibrated Relu, in graph order; saved and loaded as JSON."""

    layers: list[LayerCalibration] = field(default_factory=list)
    batches: int = 0
    samples: int = 0

    @property
    def scales(self) -> dict[str, float]:
        return {layer.node: layer.scale for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "samples": self.samples,
                "layers": [asdict(layer) for layer in self.layers]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as JSON (atomically)."""
        return save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        """Read a calibration written by ``save``."""
        try:
            data = json.loads(Path(path).read_text())
            layers = [LayerCalibration(str(e["node"]), float(e["scale"]), e["mode"],
                                       float(e["momentum"])) for e in data["layers"]]
            return cls(layers, int(data.get("batches", 0)), int(data.get("samples", 0)))
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot read calibration ({error.strerror})") from None
        except (ValueError, KeyError, TypeError) as error:
            raise OnnxSnnError(f"{path}: not a calibration file ({error!r})") from None


def calibrate(model: onnx.ModelProto, data: Any, hooks: dict[str, VoltageHook],
              batch_size: int = 100, progress: bool = True) -> Calibration:
    """Run ``model`` over ``data`` in onnxruntime and feed each Relu's hook.

    ``model`` should be prepared (``onnx_snn.prepare.prepare``: opset 13+, node
    names unique), as ``convert`` does. ``hooks`` maps node names (Relus, or any
    node whose first output is to be measured) to their collectors. ``data`` is
    anything ``onnx_snn.data.batches`` accepts.
    """
    if not hooks:
        raise OnnxSnnError("no Relu to calibrate: hooks is empty")
    graph = gs.import_onnx(infer_shapes(model))  # hook outputs take the activations' dtypes
    nodes = {node.name: node for node in graph.nodes}
    fetches: dict[str, list[gs.Variable]] = {}
    for name, hook in hooks.items():
        if name not in nodes:
            raise OnnxSnnError(f"no node named '{name}' in the model")
        fetches[name] = hook.graph_outputs(graph, nodes[name].outputs[0])
    graph.outputs = [tensor for tensors in fetches.values() for tensor in tensors]
    graph.cleanup()
    try:
        session = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise OnnxSnnError(f"onnxruntime cannot load the calibration graph: "
                           f"{str(error).strip().splitlines()[0]}") from None
    names = [t.name for t in graph.outputs]
    stream = batches(data, input_specs(model), batch_size)
    samples = 0
    for batch in tqdm(stream, total=stream.num_batches, desc="calibrating", unit="batch",
                      disable=not progress, leave=False):
        try:
            results = dict(zip(names, session.run(names, batch)))
        except Exception as error:  # onnxruntime raises its own exception types
            raise OnnxSnnError(f"onnxruntime failed on calibration data: "
                               f"{str(error).strip().splitlines()[0]}") from None
        for name, hook in hooks.items():
            hook.update(hook.statistic([results[t.name] for t in fetches[name]]))
        samples += next(iter(batch.values())).shape[0]
    layers = [LayerCalibration(name, float(hook.scale), hook.mode, hook.momentum)
              for name, hook in hooks.items()]
    return Calibration(layers, batches=next(iter(hooks.values())).batches, samples=samples)


def check_scales(calibration: Calibration) -> None:
    """Refuse scales that would divide by zero or are not finite, naming every Relu."""
    bad = [f"'{layer.node}' ({layer.scale:g})" for layer in calibration.layers
           if not (math.isfinite(layer.scale) and layer.scale > 0)]
    if bad:
        raise OnnxSnnError(
            f"Relu {', '.join(bad)}: scale must be finite and > 0 (the Relu never activated "
            "on the calibration data, or the percentile is too low); use more representative "
            "data, another mode, or exclude them")
