"""Which axis of an activation holds its channels.

Per-channel scales, thresholds and bias shifts are kept along the channel axis.
A Conv (and pooling, BatchNormalization) puts channels on axis 1 (NCHW); a MatMul
or Gemm on the last axis; a Transpose moves them, as Keras/TensorFlow graphs do
around each Conv (NHWC). The axis is found by walking from the activation back to
the layer that made it (``OpFacts.layout`` in ``onnx_snn.graph.registry``).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnx_snn.graph.registry import facts

#: The channel axis when nothing says otherwise (NCHW).
DEFAULT_CHANNEL_AXIS = 1


def channel_axis(tensor: gs.Tensor, rank: int) -> int:
    """The channel axis (0 <= axis < ``rank``) of ``tensor``, a rank-``rank`` activation."""
    trail: list[gs.Node] = []  # the Transposes passed, nearest first
    current = tensor
    axis = DEFAULT_CHANNEL_AXIS
    while current.inputs:
        node = current.inputs[0]
        layout = facts(node.op).layout
        if layout == "first":
            break
        if layout == "last":  # every tensor walked has ``rank`` axes
            axis = rank - 1
            break
        source = _same_rank_input(node, current) if layout in (None, "permute") else None
        if source is None:  # the axes change, or an input of another rank: unknown
            break
        if layout == "permute":
            trail.append(node)
        current = source
    for transpose in reversed(trail):  # from the layer's output to ``tensor``
        perm = list(transpose.attrs.get("perm", []))
        axis = perm.index(axis) if axis in perm else DEFAULT_CHANNEL_AXIS
    return axis if axis < rank else DEFAULT_CHANNEL_AXIS


def _same_rank_input(node: gs.Node, output: gs.Tensor) -> gs.Tensor | None:
    """The first non-constant input of ``node`` with ``output``'s rank, when known."""
    for tensor in node.inputs:
        if isinstance(tensor, gs.Constant) or not tensor.name:
            continue
        if node.op == "Transpose" or tensor.shape is not None and output.shape is not None \
                and len(tensor.shape) == len(output.shape):
            return tensor
        return None
    return None


def per_channel_shape(channels: int, axis: int, rank: int) -> list[int]:
    """The shape that puts ``channels`` values on ``axis`` of a rank-``rank`` tensor when
    broadcast from the right: [C, 1, ..., 1]."""
    return [channels, *[1] * (rank - 1 - axis)]
