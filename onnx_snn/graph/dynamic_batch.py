"""Make the batch axis dynamic, so time can be folded into it.

Models exported with a fixed batch (often 1) hard-code it twice: in the input
shape, and in constant Reshape targets such as a channel shuffle written as
``Reshape(x, [1, g, C/g, H, W])`` or ``view(1, -1)``. Once T steps are folded
into the batch axis, those constants are wrong. ``relax_batch`` declares a
symbolic batch on every data input and rewrites the leading element of such a
Reshape target to 0 ("copy the input's first dimension").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

BATCH_SYMBOL = "N"
_MAX_ROUNDS = 16


def relax_batch(model: onnx.ModelProto, infer) -> onnx.ModelProto:
    """A copy of ``model`` with a symbolic batch axis and batch-following Reshapes.

    ``infer`` is the shape-inference function to use between rewrites (each
    rewrite can reveal the batch axis of the next Reshape downstream).
    """
    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(model)
    model = relaxed
    initializers = {t.name for t in model.graph.initializer}
    batch_sizes: set[int] = {1}
    symbols: set[str] = set()
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in initializers or not dims:
            continue
        if dims[0].HasField("dim_value"):
            batch_sizes.add(dims[0].dim_value)
            dims[0].dim_param = BATCH_SYMBOL
        symbols.add(dims[0].dim_param)
    symbols.discard("")
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value in batch_sizes:
            dims[0].dim_param = BATCH_SYMBOL
    for _ in range(_MAX_ROUNDS):
        del model.graph.value_info[:]  # stale after a rewrite; inference would keep them
        model = infer(model)
        if not _rewrite_reshapes(model, symbols, batch_sizes):
            break
    return model


def _leading_dim_param(model: onnx.ModelProto) -> dict[str, str]:
    """The symbolic first dimension of every tensor that has one."""
    leading = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            leading[value.name] = dims[0].dim_param
    return leading


def _rewrite_reshapes(model: onnx.ModelProto, symbols: set[str], batch_sizes: set[int]) -> int:
    """Rewrite constant Reshape targets that hard-code the batch; returns how many."""
    leading = _leading_dim_param(model)
    initializers = {t.name: t for t in model.graph.initializer}
    constants = {node.output[0]: node for node in model.graph.node if node.op_type == "Constant"}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or leading.get(node.input[0]) not in symbols:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        target = _constant(node.input[1], initializers, constants)
        if target is None or target.ndim != 1 or not target.size \
                or int(target[0]) not in batch_sizes:
            continue
        fixed = target.copy()
        fixed[0] = 0
        name = f"{node.input[1]}__batch_follows_input"
        model.graph.initializer.append(numpy_helper.from_array(fixed.astype(np.int64), name))
        node.input[1] = name
        rewritten += 1
    return rewritten


def _constant(name: str, initializers: dict, constants: dict) -> np.ndarray | None:
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = constants.get(name)
    if node is not None:
        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
    return None
