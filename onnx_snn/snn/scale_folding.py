"""Fold each neuron's output scale into the weighted layer that its spikes feed.

``ReluToNeuron`` writes ``Mul(s)`` after every neuron: a full pass over the
activations at every time step. When the scaled spikes reach one Conv, Gemm or
MatMul through linear ops only, the product moves into that layer's constant
weight, ``W·(s·x) = (s·W)·x``, and the Mul goes. Per-channel scales scale the
weight's input-channel axis. The bias is untouched (it is added after the
product), and results agree with the unfolded graph up to float rounding.

Ops passed through: AveragePool, GlobalAveragePool, MaxPool (s >= 0), Pad (with
zeros, or copies), Flatten and Reshape (a scalar s, or [N, C, ...] -> [N, C·...]).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.graph.registry import STANDARD_DOMAINS, WEIGHTED, facts


class FoldOutputScales:
    """The pass: fold each ``Mul(x, constant)`` where ``x`` is the output of a node
    named in ``neurons``, when the path to a weighted layer allows it."""

    def __init__(self, neurons: Collection[str]) -> None:
        self.neurons = set(neurons)

    def __call__(self, graph: gs.Graph) -> gs.Graph:
        graph_outputs = {id(t) for t in graph.outputs}
        for node in list(graph.nodes):
            if node.op == "Mul" and len(node.inputs) == 2 and len(node.outputs) == 1:
                for spikes, scale in (node.inputs, node.inputs[::-1]):
                    if isinstance(scale, gs.Constant) and spikes.inputs \
                            and spikes.inputs[0].name in self.neurons:
                        _fold(node, spikes, scale.values, graph_outputs)
                        break
        graph.cleanup().toposort()
        return graph


def _fold(mul: gs.Node, spikes: gs.Tensor, values: np.ndarray, graph_outputs: set[int]) -> None:
    """Fold ``mul`` = spikes · ``values`` into the layer it reaches, if it may."""
    first = tensor = mul.outputs[0]
    scale = _as_channels(np.asarray(values, np.float32),
                         None if tensor.shape is None else len(tensor.shape))
    while scale is not None:
        consumer = _sole_consumer(tensor, graph_outputs)
        if consumer is None:
            return
        if consumer.op in WEIGHTED:
            weight = _scaled_weight(consumer, scale)
            if weight is not None:
                consumer.inputs[1].values = weight
                reader = first.outputs[0]
                reader.inputs[next(i for i, t in enumerate(reader.inputs) if t is first)] = spikes
                mul.inputs.clear()
                mul.outputs.clear()
            return
        scale = _through(consumer, scale)
        tensor = consumer.outputs[0]


def _as_channels(scale: np.ndarray, rank: int | None) -> np.ndarray | None:
    """``scale`` as a scalar, or as [1, C, 1, ...] against a rank-``rank`` tensor;
    None when it is neither."""
    if scale.size == 1:
        return scale.reshape(())
    if rank is None or rank < 2 or scale.ndim > rank:
        return None
    full = scale.reshape((1,) * (rank - scale.ndim) + scale.shape)
    return full if full.shape[1] == full.size else None


def _sole_consumer(tensor: gs.Tensor, graph_outputs: set[int]) -> gs.Node | None:
    """The one standard node reading ``tensor`` once as its first input, if that is all."""
    if id(tensor) in graph_outputs or len(tensor.outputs) != 1:
        return None
    consumer = tensor.outputs[0]
    if consumer.domain not in STANDARD_DOMAINS or len(consumer.outputs) != 1 \
            or consumer.inputs[0] is not tensor \
            or any(t is tensor for t in consumer.inputs[1:]):
        return None
    return consumer


def _through(node: gs.Node, scale: np.ndarray) -> np.ndarray | None:
    """The scale after ``node`` (scale applied before it), or None if it does not commute
    (``onnx_snn.graph.registry``: ``scale_passes``)."""
    rule = facts(node.op).scale_passes
    if rule == "always" or rule == "nonnegative" and np.all(scale >= 0) \
            or rule == "pad" and _pad_commutes(node, per_channel=scale.ndim > 0):
        return scale
    if rule == "flatten":
        return scale if scale.ndim == 0 else _flattened(scale, node)
    return None


def _pad_commutes(node: gs.Node, per_channel: bool) -> bool:
    """A Pad (opset >= 11) that adds zeros or copies; per channel, none on axes 0 and 1."""
    pads, value, axes = [*node.inputs[1:], None, None, None][:3]
    if pads is None or not _absent_or_zero(value):
        return False
    if not per_channel:
        return True
    return isinstance(pads, gs.Constant) and (axes is None or not axes.name) \
        and not np.any(pads.values.reshape(2, -1)[:, :2])


def _absent_or_zero(tensor: gs.Tensor | None) -> bool:
    return tensor is None or not tensor.name \
        or isinstance(tensor, gs.Constant) and not np.any(tensor.values)


def _flattened(scale: np.ndarray, node: gs.Node) -> np.ndarray | None:
    """A per-channel scale of [N, C, ...] as [1, F] after ``node`` flattens it to [N, F]."""
    before, after = node.inputs[0].shape, node.outputs[0].shape
    if before is None or after is None or len(after) != 2 \
            or not all(isinstance(d, int) for d in before[2:]):
        return None
    size = int(np.prod(before[2:], dtype=np.int64))
    if after[1] != scale.size * size:
        return None
    return np.repeat(scale.reshape(-1), size).reshape(1, -1)


def _scaled_weight(node: gs.Node, scale: np.ndarray) -> np.ndarray | None:
    """``node``'s weight times ``scale`` along its input axis; None if that cannot be done."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if not isinstance(weight, gs.Constant) or len(weight.outputs) != 1 \
            or weight.values.dtype != np.float32:
        return None
    w = weight.values
    if scale.ndim == 0:
        return (w * scale).astype(np.float32)
    channels = scale.reshape(-1)
    if node.op == "Conv":  # W: [C_out, C_in / groups, k...]; input channel g·(C_in/groups) + j
        groups = int(node.attrs.get("group", 1))
        if channels.size != w.shape[1] * groups:
            return None
        factor = np.repeat(channels.reshape(groups, -1), w.shape[0] // groups, axis=0)
        return (w * factor.reshape(*factor.shape, *[1] * (w.ndim - 2))).astype(np.float32)
    # Gemm / MatMul contract the last axis: with per-channel scales, a [N, K] input.
    if scale.ndim != 2 or node.op == "Gemm" and node.attrs.get("transA", 0):
        return None
    transposed = node.op == "Gemm" and node.attrs.get("transB", 0)
    if w.ndim < 2 or w.shape[-1 if transposed else -2] != channels.size:
        return None
    return (w * (channels if transposed else channels[:, None])).astype(np.float32)
