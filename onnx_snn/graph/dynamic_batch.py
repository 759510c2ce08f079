"""Make the batch axis dynamic, so time can be folded into it.

Every data input's first axis is named ``BATCH_SYMBOL``, however the exporter
named it, so later passes recognise batch-leading tensors by that name.
Models exported with a fixed batch (often 1) hard-code it twice: in the input
shape, and in constant Reshape targets such as a channel shuffle written as
``Reshape(x, [1, g, C/g, H, W])`` or ``view(1, -1)``. Once T steps are folded
into the batch axis, those constants are wrong. ``relax_batch`` declares a
symbolic batch on every data input and rewrites the leading element of such a
Reshape target to 0 ("copy the input's first dimension").

Which Reshapes read a batch-leading tensor is found by shape inference with the
inputs' batch set to ``MARKER_BATCH``, a number no real dimension is likely to
equal: concrete sizes survive ops (Resize, Upsample, data-dependent shapes) where a
symbolic batch would turn into a fresh unknown.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

BATCH_SYMBOL = "N"
#: The batch the inputs get while looking for batch-following Reshapes (a prime).
MARKER_BATCH = 7919
#: Shape computations folded while looking, up to this size (bytes) a value.
MARKER_FOLD_LIMIT = 2**20

Infer = Callable[[onnx.ModelProto], onnx.ModelProto]
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


def relax_batch(model: onnx.ModelProto, infer: Infer) -> onnx.ModelProto:
    """A shape-inferred copy of ``model`` with a symbolic batch axis and batch-following
    Reshapes.

    ``infer`` is the shape-inference function to use between rewrites (each
    rewrite can reveal the batch axis of the next Reshape downstream).
    """
    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(model)
    model = relaxed
    batch_sizes = _fixed_batch_sizes(model) | {1}
    _follow_batch(model, batch_sizes, infer)
    symbols = {BATCH_SYMBOL}
    for value in _data_inputs(model):
        first = value.type.tensor_type.shape.dim[0]
        symbols.add(first.dim_param)
        first.dim_param = BATCH_SYMBOL  # one name for the batch, whatever the exporter chose
    symbols.discard("")
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and (dims[0].dim_value in batch_sizes or dims[0].dim_value < 0
                     if dims[0].HasField("dim_value") else dims[0].dim_param in symbols):
            dims[0].dim_param = BATCH_SYMBOL
    del model.graph.value_info[:]
    return infer(model)


def _data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers and have a known rank >= 1."""
    initializers = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers
            and value.type.tensor_type.shape.dim]


def _fixed_batch_sizes(model: onnx.ModelProto) -> set[int]:
    """The fixed first dimensions of the data inputs (a -1 that some exporters write
    for "any" is none)."""
    return {value.type.tensor_type.shape.dim[0].dim_value for value in _data_inputs(model)
            if value.type.tensor_type.shape.dim[0].dim_value > 0}


def _follow_batch(model: onnx.ModelProto, batch_sizes: set[int], infer: Infer) -> None:
    """Rewrite, in place, the Reshapes whose constant target hard-codes the batch."""
    # each round rewrites at least one Reshape (a chain of them, as in a channel shuffle,
    # reveals one more per round), so there are at most as many rounds as Reshapes
    for _ in range(sum(node.op_type == "Reshape" for node in model.graph.node)):
        rewritten = _rewrite_reshapes(_marked(model, infer), batch_sizes)
        if not rewritten:
            return
        for node in model.graph.node:
            if node.op_type == "Reshape" and node.output[0] in rewritten:
                _set_target(model.graph, node, rewritten[node.output[0]])


def _marked(model: onnx.ModelProto, infer: Infer) -> onnx.ModelProto:
    """A shape-inferred copy of ``model`` with ``MARKER_BATCH`` as every input's batch,
    its shape computations folded (onnx-graphsurgeon): onnx's own inference does not
    evaluate them all (a Div of a Shape, as TorchScript writes ``chunk``)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for value in _data_inputs(probe):
        value.type.tensor_type.shape.dim[0].dim_value = MARKER_BATCH
    del probe.graph.output[:]  # declared output shapes would clash with the marker
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o.name)
                              for o in model.graph.output)
    del probe.graph.value_info[:]
    probe = infer(probe)
    if not any(node.op_type == "Shape" for node in probe.graph.node):
        return probe
    probe = fold_constants(probe, fold_shapes=True, size_limit=MARKER_FOLD_LIMIT)
    del probe.graph.value_info[:]
    return infer(probe)


def fold_constants(model: onnx.ModelProto, fold_shapes: bool, size_limit: int
                   ) -> onnx.ModelProto:
    """``model`` with every node whose inputs are all constant (Constant nodes too, and,
    with ``fold_shapes``, Shapes of static tensors) replaced by initializers of at most
    ``size_limit`` bytes: onnx-graphsurgeon's constant folding, run in onnxruntime."""
    graph = gs.import_onnx(model)
    graph.fold_constants(fold_shapes=fold_shapes, recurse_subgraphs=False,
                         size_threshold=size_limit).cleanup()
    folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = model.ir_version
    return folded


def _leading_dims(model: onnx.ModelProto) -> dict[str, int]:
    """The known first dimension of every tensor that has one."""
    leading = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            leading[value.name] = dims[0].dim_value
    return leading


def _rewrite_reshapes(model: onnx.ModelProto, batch_sizes: set[int]
                      ) -> dict[str, np.ndarray]:
    """By output name: the new target of each Reshape that reads a batch-leading tensor
    (first dimension ``MARKER_BATCH``) but whose constant target starts with a fixed
    batch size."""
    leading = _leading_dims(model)
    initializers = {t.name: t for t in model.graph.initializer}
    constants = {node.output[0]: node for node in model.graph.node if node.op_type == "Constant"}
    rewritten = {}
    for node in model.graph.node:
        if node.op_type != "Reshape" or leading.get(node.input[0]) != MARKER_BATCH:
            continue
        target = _constant(node.input[1], initializers, constants)
        if target is None or target.ndim != 1 or not target.size \
                or int(target[0]) not in batch_sizes or np.any(target[1:] == 0):
            continue  # with allowzero, a 0 elsewhere is a real empty axis: leave it
        fixed = target.astype(np.int64)
        fixed[0] = 0
        rewritten[node.output[0]] = fixed
    return rewritten


def _set_target(graph: onnx.GraphProto, node: onnx.NodeProto, target: np.ndarray) -> None:
    """Give Reshape ``node`` a new constant target; 0 copies the input's dimension, so
    ``allowzero`` goes."""
    name = f"{node.output[0]}__batch_follows_input"
    graph.initializer.append(numpy_helper.from_array(target, name))
    node.input[1] = name
    kept = [a for a in node.attribute if a.name != "allowzero"]
    del node.attribute[:]
    node.attribute.extend(kept)


def _constant(name: str, initializers: dict, constants: dict) -> np.ndarray | None:
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = constants.get(name)
    if node is not None:
        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
    return None


def batch_losing_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """By node name: the nodes of a prepared model that take a tensor with a batch axis
    and give one without (a Reshape to [-1] that flattens the batch away, then a
    Gather of constant indices, as a batch-1 export writes ``flatten`` of a
    channels-last tensor), with the tensor they give. Once time is folded into the
    batch, such a node mixes the steps."""
    probe = _marked(model, lambda m: onnx.shape_inference.infer_shapes(m, data_prop=True))
    values = [*probe.graph.input, *probe.graph.value_info, *probe.graph.output]
    dims = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in values if value.type.tensor_type.HasField("shape")}
    floats = {value.name for value in values
              if value.type.tensor_type.elem_type in _FLOAT_TYPES}  # data, not shapes

    def batched(name: str) -> bool | None:
        shape = dims.get(name)
        return None if shape is None or 0 in shape else \
            any(d and d % MARKER_BATCH == 0 for d in shape)

    return {node.name: node.output[0] for node in probe.graph.node
            if node.input and node.output and node.output[0] in floats
            and batched(node.input[0]) and batched(node.output[0]) is False}

