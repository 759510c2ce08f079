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
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from tqdm.auto import tqdm

from onnx_snn.data import batches, input_specs
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph_builder import GraphBuilder
from onnx_snn.outputs import write_json
from onnx_snn.prepare import infer_shapes
from onnx_snn.runtime import create_session, run_checked
from onnx_snn.validation import (
    FLOAT32_MAX, FLOAT32_TINY, check_bool, check_float32_normal, is_number,
)

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


Scale = Union[float, np.ndarray]
CHANNEL_AXIS = 1


def channel_axes(activation: gs.Variable) -> list[int]:
    """All axes but the channel axis (1) of ``activation``, whose rank must be known."""
    if activation.shape is None or len(activation.shape) < 2:
        raise OnnxSnnError(f"'{activation.name}': per-channel calibration needs a known rank "
                           f">= 2 (got shape {activation.shape})")
    return [0, *range(2, len(activation.shape))]


class VoltageHook:
    """Collects the scale of one Relu's output over calibration batches (SPEC §2).

    Per batch it computes a statistic ``s_t`` over the whole output tensor
    (batch axis included), then ``scale = s_t`` for the first batch and
    ``scale = (1 - momentum) * scale + momentum * s_t`` after that. With
    ``per_channel`` the same happens per channel (axis 1), all other axes
    pooled, and ``scale`` is an array.

    A hook adds its reduction to the calibration graph (``graph_outputs``),
    may feed extra inputs per batch (``feeds``), and reads back what it added
    (``observe``).
    """

    def __init__(self, mode: Mode = "Max", momentum: float = 0.1,
                 per_channel: bool = False) -> None:
        self.mode = mode
        self.kind, self.value = parse_mode(mode)
        self.momentum = check_momentum(momentum)
        self.per_channel = bool(per_channel)
        self.scale: Scale | None = None
        self.batches = 0

    def feeds(self) -> dict[str, np.ndarray]:
        """Extra graph inputs for the next batch (none for this hook)."""
        return {}

    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        """Add this hook's reduction of ``activation`` to ``graph``; return what to fetch."""
        make = GraphBuilder(graph, f"{activation.name}__calib_")
        axes = channel_axes(activation) if self.per_channel else None
        if self.kind != "percentile":
            return [make.reduce("ReduceMax", activation, axes, activation.dtype)]
        return self._percentile_outputs(make, activation)

    def _percentile_outputs(self, make: GraphBuilder, activation: gs.Variable
                            ) -> list[gs.Variable]:
        """Per row of [C, n] (C = 1 per layer): TopK of the elements around the
        percentile's rank, and the [C, n] shape."""
        if self.per_channel:
            rank = len(channel_axes(activation)) + 1
            perm = [CHANNEL_AXIS, 0, *range(2, rank)]
            rows = make("Transpose", [activation], activation.dtype, {"perm": perm})
            rows = make("Reshape", [rows, make.const([0, -1])], activation.dtype)
        else:
            rows = make("Reshape", [activation, make.const([1, -1])], activation.dtype)
        shape = make("Shape", [rows], np.int64)
        count = make("Gather", [shape, make.const(1)], np.int64, {"axis": 0})
        as_double = make("Cast", [count], np.float64, {"to": onnx.TensorProto.DOUBLE})
        q = self.value / 100.0
        index = make("Mul", [make("Sub", [as_double, make.const(1.0, np.float64)], np.float64),
                             make.const(q, np.float64)], np.float64)
        below = make("Cast", [make("Floor", [index], np.float64)], np.int64,
                     {"to": onnx.TensorProto.INT64})
        largest = q >= 0.5
        # One element of margin on each side absorbs any rounding between the
        # graph's index and numpy's; the exact neighbours are picked on the host.
        wanted = (make("Add", [make("Sub", [count, below], np.int64), make.const(1)], np.int64)
                  if largest else make("Add", [below, make.const(3)], np.int64))
        k = make("Reshape", [make("Min", [wanted, count], np.int64), make.const([1])], np.int64)
        values = gs.Variable(make.name("topk"), activation.dtype)
        make.graph.nodes.append(gs.Node(
            "TopK", make.name("topk_node"), attrs={"axis": -1, "largest": int(largest),
                                                   "sorted": 1},
            inputs=[rows, k], outputs=[values, gs.Variable(make.name("topk_index"), np.int64)]))
        return [values, shape]

    def statistic(self, fetched: list[np.ndarray]) -> Scale:
        """This batch's ``s_t`` from the fetched reduction results."""
        if self.kind == "percentile":
            values, (_, count) = fetched[0], fetched[1]
            if self.value / 100.0 >= 0.5:
                result = numpy_linear_percentile(count, self.value,
                                                 lambda j: values[:, count - 1 - j])
            else:
                result = numpy_linear_percentile(count, self.value, lambda j: values[:, j])
        else:
            result = fetched[0]
            if self.kind == "fraction":
                result = np.asarray(result, dtype=np.float64) * self.value
        result = np.asarray(result, dtype=np.float64)
        return result.reshape(-1) if self.per_channel else float(result.reshape(-1)[0])

    def update(self, s_t: Scale) -> None:
        """Fold one batch's statistic into the moving average."""
        if self.scale is None:
            self.scale = s_t
        else:
            self.scale = (1.0 - self.momentum) * self.scale + self.momentum * s_t
        self.batches += 1

    def observe(self, fetched: list[np.ndarray]) -> None:
        """Take one batch's fetched results."""
        self.update(self.statistic(fetched))


class ThresholdBalancingHook:
    """Local threshold balancing: a per-channel threshold θ, balanced in onnxruntime.

    Per batch and channel: ``θ ← max(θ + 2·mean(relu(x) − θ)⁺, eps)``, starting
    from 0, and the activation passed downstream is clipped at the new θ, so
    later layers are calibrated on what the spiking layers will produce
    (Bu, Li, Yu, "Inference-scale complexity in ANN-SNN conversion for
    high-performance and low-power applications", CVPR 2025; SPEC §7).
    """

    mode = "threshold-balancing"
    momentum = None
    per_channel = True

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = float(eps)
        self.scale: np.ndarray | None = None
        self.batches = 0
        self._input: str | None = None

    def feeds(self) -> dict[str, np.ndarray]:
        return {self._input: self.scale.astype(np.float32)}

    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        axes = channel_axes(activation)
        channels = activation.shape[CHANNEL_AXIS]
        if not isinstance(channels, int):
            raise OnnxSnnError(f"'{activation.name}': threshold balancing needs a known "
                               "channel count")
        consumers = list(activation.outputs)
        make = GraphBuilder(graph, f"{activation.name}__ltb_")
        theta_in = gs.Variable(make.name("theta"), np.float32, [channels])
        graph.inputs.append(theta_in)
        self._input, self.scale = theta_in.name, np.zeros(channels)
        view = make.const([channels] + [1] * (len(axes) - 1))
        overflow = make("Relu", [make("Sub", [activation, make("Reshape", [theta_in, view],
                                                                     np.float32)], np.float32)],
                        np.float32)
        per_channel = make("Div", [make.reduce("ReduceSum", overflow, axes, np.float32),
                                   make("Cast", [make("Div", [make("Size", [activation], np.int64),
                                                              make.const(channels)], np.int64)],
                                        np.float32, {"to": onnx.TensorProto.FLOAT})],
                           np.float32)
        theta = make("Max", [make("Add", [theta_in, make("Mul", [per_channel, make.const(
            2.0, np.float32)], np.float32)], np.float32), make.const(self.eps, np.float32)],
                     np.float32)
        clipped = make("Min", [activation, make("Reshape", [theta, view], np.float32)],
                       np.float32)
        for consumer in consumers:
            for index, tensor in enumerate(consumer.inputs):
                if tensor is activation:
                    consumer.inputs[index] = clipped
        return [theta]

    def observe(self, fetched: list[np.ndarray]) -> None:
        self.scale = np.asarray(fetched[0], dtype=np.float64)
        self.batches += 1


class HookFactory:
    """Makes a fresh ``VoltageHook`` for each Relu that is converted.

    ``mode``: "Max" (any case), a percentile "P%" with 0 <= P <= 100, or a
    number f in (0, 1] meaning f times the maximum. ``momentum`` in [0, 1]
    weights each new batch in the moving average. ``per_channel`` keeps one
    scale per channel (axis 1) instead of one per layer: the biggest single
    gain on deep nets (Kim et al., "Spiking-YOLO", AAAI 2020). Bad settings
    are rejected here, not at calibration time.
    """

    def __init__(self, mode: Mode = "Max", momentum: float = 0.1,
                 per_channel: bool = False) -> None:
        parse_mode(mode)
        check_momentum(momentum)
        self.mode = mode
        self.momentum = momentum
        self.per_channel = check_bool(per_channel, "per_channel")

    def create(self) -> VoltageHook:
        """A new, empty collector."""
        return VoltageHook(mode=self.mode, momentum=self.momentum, per_channel=self.per_channel)


class BalancingHookFactory(HookFactory):
    """Makes a ``ThresholdBalancingHook`` per Relu (local threshold balancing)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = check_float32_normal(eps, "eps")

    def create(self) -> ThresholdBalancingHook:
        return ThresholdBalancingHook(self.eps)


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
    """Scales of every calibrated Relu, in graph order; saved and loaded as JSON."""

    layers: list[LayerCalibration] = field(default_factory=list)
    batches: int = 0
    samples: int = 0

    @property
    def scales(self) -> dict[str, Scale]:
        return {layer.node: layer.scale for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        layers = [{**asdict(layer), "scale": np.asarray(layer.scale).tolist()}
                  for layer in self.layers]
        return {"batches": self.batches, "samples": self.samples, "layers": layers}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        """Read a calibration written by ``save``."""
        try:
            data = json.loads(Path(path).read_text())
            layers = [LayerCalibration(str(e["node"]), _scale_from_json(e["scale"], e["node"]),
                                       e["mode"],
                                       None if e["momentum"] is None else float(e["momentum"]))
                      for e in data["layers"]]
            return cls(layers, int(data.get("batches", 0)), int(data.get("samples", 0)))
        except OSError as error:
            raise OnnxSnnError(f"{path}: cannot read calibration ({error.strerror})") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise OnnxSnnError(f"{path}: not a calibration file ({error})") from None


def _describe(scale: Scale) -> str:
    if np.ndim(scale) == 0:
        return f"{float(scale):g}"
    values = np.asarray(scale)
    return f"per channel, min {values.min():g}, max {values.max():g}"


def _scale_from_json(value: Any, node: str) -> Scale:
    """A scale as saved: a number, or a non-empty list of numbers (one per channel)."""
    if isinstance(value, list):
        if not value or not all(is_number(v) for v in value):
            raise ValueError(f"the scale of '{node}' must be a number or a non-empty list of "
                             f"numbers, got {json.dumps(value)[:60]}")
        return np.asarray(value, dtype=np.float64)
    if not is_number(value):
        raise ValueError(f"the scale of '{node}' must be a number, got {value!r}")
    return float(value)


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
    session = create_session(gs.export_onnx(graph), native=False)
    names = [t.name for t in graph.outputs]
    stream = batches(data, input_specs(model), batch_size)
    samples = 0
    for index, batch in enumerate(tqdm(stream, total=stream.num_batches, desc="calibrating",
                                       unit="batch", disable=None if progress else True,
                                       leave=False)):
        feed = dict(batch)
        for hook in hooks.values():
            feed.update(hook.feeds())
        results = dict(zip(names, run_checked(session, names, feed,
                                              f"calibration data, batch {index}")))
        for name, hook in hooks.items():
            hook.observe([results[t.name] for t in fetches[name]])
        samples += next(iter(batch.values())).shape[0]
    layers = [LayerCalibration(name, hook.scale, hook.mode, hook.momentum)
              for name, hook in hooks.items()]
    return Calibration(layers, batches=next(iter(hooks.values())).batches, samples=samples)


def check_scales(calibration: Calibration) -> None:
    """Refuse scales that would divide by zero, are not finite or leave float32's
    normal range, naming every Relu.

    Per channel, a channel with scale 0 never activated and stays silent; only a
    layer whose channels are all 0, or any other bad value, is refused.
    """
    def usable(scale: Scale) -> bool:
        values = np.asarray(scale, dtype=np.float64)
        return bool(np.isfinite(values).all() and (values >= 0).all() and (values > 0).any())

    bad = [f"'{layer.node}' ({_describe(layer.scale)})" for layer in calibration.layers
           if not usable(layer.scale)]
    if bad:
        raise OnnxSnnError(
            f"Relu {', '.join(bad)}: scale must be finite and > 0 (the Relu never activated "
            "on the calibration data, or the percentile is too low); use more representative "
            "data, another mode, or exclude them")
    extreme = [f"'{layer.node}' ({_describe(layer.scale)})" for layer in calibration.layers
               if not _in_float32_range(layer.scale)]
    if extreme:
        raise OnnxSnnError(f"Relu {', '.join(extreme)}: a scale must lie within float32's "
                           f"normal range [{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}] (or be 0 "
                           "for a silent channel)")


def _in_float32_range(scale: Scale) -> bool:
    values = np.asarray(scale, dtype=np.float64)
    positive = values[values > 0]
    return bool(((positive >= FLOAT32_TINY) & (positive <= FLOAT32_MAX)).all())
