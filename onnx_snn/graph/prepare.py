"""Prepare an ANN graph for conversion.

- refuse a graph the later steps cannot read (``onnx_snn.graph.validity``): names
  that are not UTF-8, non-tensor inputs, short initializers, unknown attributes,
  undefined or twice-written tensors, cycles, ops from domains onnxruntime does not
  know unless the model defines them;
- bring the ai.onnx opset up to at least ``MIN_OPSET`` (``onnx.version_converter``);
- replace ZipMap outputs (scikit-learn converters) by their probability tensors;
- fold what depends on constants alone into initializers (weights written as Constant
  nodes, as paddle2onnx does, and Reshapes of them), so that weighted layers,
  BatchNorm folding and shape inference see constant weights and shapes;
- make the batch axis dynamic (``onnx_snn.graph.dynamic_batch``) and run shape inference;
- fold a BatchNormalization that follows a Conv or Gemm into that layer;
- write a MaxPool or AveragePool whose window is its whole input as the global pool
  it is (TorchScript writes ``AdaptiveMaxPool2d(1)`` so, dynamo as a ReduceMax), so
  the same net converts the same way from either exporter;
- drop Dropout and Identity nodes;
- give every node a unique name (layers are addressed by node name).

The result computes the same function as the input (up to float rounding).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from onnx_snn.errors import OnnxSnnError, first_line
from onnx_snn.graph.dynamic_batch import BATCH_SYMBOL, fold_constants, relax_batch
from onnx_snn.graph.registry import MIN_OPSET
from onnx_snn.graph.validity import (
    ai_onnx_opset,
    check_dataflow,
    check_domains,
    check_structure,
)


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A cleaned, shape-inferred copy of ``model`` at ai.onnx opset >= MIN_OPSET (see the
    module doc)."""
    return gs.export_onnx(prepared_graph(model))


def prepared_graph(model: onnx.ModelProto) -> gs.Graph:
    """``prepare``'s result as a graph. Shape inference runs once (again only after a
    batch-following Reshape is rewritten); the later steps keep the shapes."""
    check_structure(model)
    check_domains(model)
    check_dataflow(model.graph)
    opset = ai_onnx_opset(model)
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as error:  # the converter raises several internal types
            raise OnnxSnnError(f"cannot convert the model from opset {opset} to {MIN_OPSET}: "
                               f"{first_line(error)}") from error
    model = fold_constant_subgraphs(replace_zipmaps(model))
    graph = gs.import_onnx(relax_batch(model, infer_shapes))
    name_nodes(graph)
    globalise_pools(graph)
    fold_batch_norms(graph)
    drop_passthrough_nodes(graph)
    return graph.cleanup().toposort()


def replace_zipmaps(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop each ZipMap (probabilities as a sequence of maps) that produces a graph output;
    the output then carries the probability tensor under the same name."""
    zipmaps = [n for n in model.graph.node if n.op_type == "ZipMap"
               and n.output[0] in {o.name for o in model.graph.output}]
    if not zipmaps:
        return model
    model = _copy(model)
    for zipmap in zipmaps:
        probabilities, result = zipmap.input[0], zipmap.output[0]
        model.graph.node.remove(next(n for n in model.graph.node if n.output == zipmap.output))
        for node in model.graph.node:
            node.input[:] = [result if name == probabilities else name for name in node.input]
            node.output[:] = [result if name == probabilities else name for name in node.output]
        output = next(o for o in model.graph.output if o.name == result)
        output.type.CopyFrom(onnx.helper.make_tensor_type_proto(
            onnx.TensorProto.FLOAT, [BATCH_SYMBOL, None]))
    return model


#: Folded values above this size stay computed in the graph (a Tile or Expand of a
#: constant can be far larger than its inputs).
FOLD_SIZE_LIMIT = 64 * 2**20


def fold_constant_subgraphs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every Constant node, and every node whose inputs are all constant,
    replaced by initializers (onnx-graphsurgeon's constant folding, run in
    onnxruntime). Shapes are not folded: a batch-1 export's Shape of the input would
    become the constant 1 and stop following the batch."""
    if not any(node.op_type == "Constant" for node in model.graph.node):
        return model
    return fold_constants(model, fold_shapes=False, size_limit=FOLD_SIZE_LIMIT)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference that keeps going where an op has no inference function, plus the
    ranks of Reshapes whose target onnx cannot evaluate (``reshape_ranks``)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as error:  # inference errors come as several internal types
        raise OnnxSnnError(f"shape inference failed: {first_line(error)}") \
            from error
    if reshape_ranks(inferred):
        inferred = infer_shapes(inferred)
    return inferred


def reshape_ranks(model: onnx.ModelProto) -> int:
    """Declare, in place, the rank of each Reshape output that shape inference left
    unknown while the target's length is known (a target computed from a Shape through
    a Cast, which onnx does not propagate, as paddle2onnx writes ``flatten``): its
    dimensions stay unknown. Returns how many it declared."""
    values = {value.name: value for value in
              [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    lengths = {t.name: list(t.dims) for t in model.graph.initializer}
    lengths.update({name: [d.dim_value if d.HasField("dim_value") else None
                           for d in value.type.tensor_type.shape.dim]
                    for name, value in values.items()
                    if value.type.tensor_type.HasField("shape")})
    declared = 0
    for node in model.graph.node:
        target = lengths.get(node.input[1]) if node.op_type == "Reshape" else None
        output = values.get(node.output[0]) if node.op_type == "Reshape" else None
        if target is None or len(target) != 1 or target[0] is None \
                or output is not None and output.type.tensor_type.HasField("shape"):
            continue
        info = onnx.helper.make_tensor_value_info(
            node.output[0], values[node.input[0]].type.tensor_type.elem_type
            if node.input[0] in values else onnx.TensorProto.FLOAT, [None] * target[0])
        if output is None:
            model.graph.value_info.append(info)
        else:
            output.CopyFrom(info)
        declared += 1
    return declared


def name_nodes(graph: gs.Graph) -> None:
    """Give unnamed nodes ``<op>_<index>`` names and make repeated names unique.

    Names the user gave win: the first node with a given name keeps it, and
    generated names avoid every given name.
    """
    given = {node.name for node in graph.nodes if node.name}
    taken: set[str] = set()
    for index, node in enumerate(graph.nodes):
        name = node.name if node.name and node.name not in taken else \
            f"{node.name or node.op}_{index}"
        while name in taken or (name != node.name and name in given):
            name = f"{name}_{index}"
        node.name = name
        taken.add(name)


_GLOBAL_POOLS = {"MaxPool": "GlobalMaxPool", "AveragePool": "GlobalAveragePool"}


def globalise_pools(graph: gs.Graph) -> int:
    """Turn each pool whose window covers its whole input (static spatial dims, no
    padding or dilation) into the global pool of the same kind; returns how many."""
    changed = 0
    for node in graph.nodes:
        shape = node.inputs[0].shape if node.op in _GLOBAL_POOLS and node.inputs else None
        if shape is None or len(node.outputs) != 1 or len(shape) < 3:
            continue
        spatial = list(shape[2:])
        kernel = list(node.attrs.get("kernel_shape", []))
        if kernel != spatial or not all(isinstance(d, int) for d in spatial) \
                or any(node.attrs.get("pads", [0])) \
                or any(d != 1 for d in node.attrs.get("dilations", [1])) \
                or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET", "VALID",
                                                                  b"VALID"):
            continue
        node.op = _GLOBAL_POOLS[node.op]
        node.attrs.clear()
        changed += 1
    return changed


def _only_consumer(tensor: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    if len(tensor.outputs) != 1 or tensor in graph.outputs:
        return None
    return tensor.outputs[0]


def _batch_norm_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, shift) of an inference BatchNormalization, in float64."""
    params = bn.inputs[1:5]
    if len(params) != 4 or not all(isinstance(p, gs.Constant) for p in params):
        return None
    if bn.attrs.get("training_mode", 0) or len(bn.outputs) != 1:
        return None
    gamma, beta, mean, var = (np.asarray(p.values, dtype=np.float64) for p in params)
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def fold_batch_norms(graph: gs.Graph) -> int:
    """Fold each BatchNormalization that is the only consumer of a Conv/Gemm output."""
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        source = bn.inputs[0]
        layer = source.inputs[0] if source.inputs else None
        if layer is None or layer.op not in ("Conv", "Gemm") \
                or _only_consumer(source, graph) is not bn:
            continue
        affine = _batch_norm_affine(bn)
        if affine is None or not all(isinstance(t, gs.Constant) for t in layer.inputs[1:]):
            continue
        if layer.op == "Conv" and _fold_into_conv(layer, *affine) \
                or layer.op == "Gemm" and _fold_into_gemm(layer, *affine):
            layer.outputs = [bn.outputs[0]]
            bn.inputs.clear()
            bn.outputs.clear()
            folded += 1
    return folded


def _fold_into_conv(conv: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    weight = conv.inputs[1].values
    if weight.shape[0] != scale.size:
        return False
    bias = conv.inputs[2].values if len(conv.inputs) > 2 else np.zeros(weight.shape[0])
    new_weight = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    new_bias = bias.astype(np.float64) * scale + shift
    conv.inputs[1] = gs.Constant(f"{conv.name}_bn_weight", new_weight.astype(weight.dtype))
    bias_const = gs.Constant(f"{conv.name}_bn_bias", new_bias.astype(weight.dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = bias_const
    else:
        conv.inputs.append(bias_const)
    return True


def _fold_into_gemm(gemm: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    if gemm.attrs.get("transA", 0) not in (0, 1):
        return False
    weight = gemm.inputs[1].values.astype(np.float64)
    trans_b = bool(gemm.attrs.get("transB", 0))
    outputs = weight.shape[0] if trans_b else weight.shape[1]
    if outputs != scale.size:
        return False
    beta = float(gemm.attrs.get("beta", 1.0))
    bias = gemm.inputs[2].values.astype(np.float64) if len(gemm.inputs) > 2 else np.zeros(1)
    if bias.size not in (1, outputs) or bias.ndim == 2 and bias.shape[0] != 1:
        return False  # a per-row bias cannot fold into per-column parameters
    bias = bias.reshape(-1)
    new_weight = weight * (scale[:, None] if trans_b else scale[None, :])
    new_bias = np.broadcast_to(beta * bias, (outputs,)) * scale + shift
    dtype = gemm.inputs[1].values.dtype
    gemm.inputs[1] = gs.Constant(f"{gemm.name}_bn_weight", new_weight.astype(dtype))
    bias_const = gs.Constant(f"{gemm.name}_bn_bias", new_bias.astype(dtype))
    if len(gemm.inputs) > 2:
        gemm.inputs[2] = bias_const
    else:
        gemm.inputs.append(bias_const)
    gemm.attrs["beta"] = 1.0
    return True


def drop_passthrough_nodes(graph: gs.Graph) -> int:
    """Remove Identity nodes and inference Dropouts whose mask is unused."""
    dropped = 0
    for node in [n for n in graph.nodes if n.op in ("Identity", "Dropout")]:
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue
        source, result = node.inputs[0], node.outputs[0]
        if result in graph.outputs:
            producer = source.inputs[0] if source.inputs else None
            if producer is None or source in graph.outputs:
                continue  # a graph input or output passes straight through: keep it
            producer.outputs[producer.outputs.index(source)] = result
            for consumer in list(source.outputs):
                if consumer is not node:
                    _replace_input(consumer, source, result)
        else:
            for consumer in list(result.outputs):
                _replace_input(consumer, result, source)
        node.inputs.clear()
        node.outputs.clear()
        dropped += 1
    return dropped


def _replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for index, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[index] = new
