"""What makes an ANN graph readable by the later steps: each check refuses, before any
work, with one line naming the node, tensor or attribute."""

from __future__ import annotations

import numpy as np
import onnx

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.registry import ONNXRUNTIME_DOMAINS

#: How a value's type reads in a message, by ``TypeProto``'s field.
_TYPE_NAMES = {"sequence_type": "a sequence", "optional_type": "an optional",
               "map_type": "a map", "sparse_tensor_type": "a sparse tensor",
               None: "of no type"}


def ai_onnx_opset(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset version."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise OnnxSnnError("the model imports no ai.onnx opset")


def check_structure(model: onnx.ModelProto) -> None:
    """Refuse, before any work, what the later steps cannot read: names that are not
    UTF-8, inputs that are not tensors, initializers whose bytes do not fill their
    shape, and attributes that an ai.onnx op does not have (ZipMap outputs, maps, are
    replaced later)."""
    graph = model.graph
    for index, node in enumerate(graph.node):
        names = [node.name, node.op_type, node.domain, *node.input, *node.output,
                 *(attribute.name for attribute in node.attribute)]
        if not all(isinstance(name, str) for name in names):  # protobuf gives bytes then
            raise OnnxSnnError(f"node #{index} has a name, op or tensor name that is not "
                               "valid UTF-8: not a valid ONNX model")
    for value in graph.input:  # outputs may be maps: ZipMap's are replaced later
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise OnnxSnnError(f"input '{value.name}' is {_TYPE_NAMES.get(kind, kind)}; "
                               "onnx-snn converts models whose inputs are tensors")
    for tensor in graph.initializer:
        _check_initializer_bytes(tensor)
    opset = ai_onnx_opset(model)
    for node in graph.node:
        if node.domain in ("", "ai.onnx"):
            _check_attributes(node, opset)


def _check_initializer_bytes(tensor: onnx.TensorProto) -> None:
    """Refuse an initializer whose raw bytes are not its shape's size."""
    if not tensor.HasField("raw_data") or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) \
        if tensor.data_type in onnx.helper.get_all_tensor_dtypes() else None
    if dtype is None or dtype.kind in "OUS":
        return
    needed = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize
    if len(tensor.raw_data) != needed:
        raise OnnxSnnError(f"initializer '{tensor.name}' holds {len(tensor.raw_data):,} bytes; "
                           f"its shape {list(tensor.dims)} of {dtype} needs {needed:,}")


def _check_attributes(node: onnx.NodeProto, opset: int) -> None:
    """Refuse an attribute that the node's ai.onnx op does not have at ``opset``."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return  # an unknown op: check_domains and onnxruntime say so
    unknown = [a.name for a in node.attribute if a.name not in schema.attributes]
    if unknown:
        raise OnnxSnnError(f"node '{node.name or node.op_type}' ({node.op_type}) has attribute "
                           f"'{unknown[0]}', which {node.op_type} at opset {opset} does not "
                           f"have (it has: {', '.join(sorted(schema.attributes)) or 'none'})")


def check_domains(model: onnx.ModelProto) -> None:
    """Refuse, before any work, nodes whose op neither onnxruntime nor the model defines."""
    defined = {(f.domain, f.name) for f in model.functions}
    unknown = [f"'{node.name or node.op_type}' ({node.domain}::{node.op_type})"
               for node in model.graph.node
               if node.domain not in ONNXRUNTIME_DOMAINS
               and (node.domain, node.op_type) not in defined]
    if unknown:
        raise OnnxSnnError(f"node {', '.join(unknown)} uses an op that onnxruntime does not know "
                           "and the model does not define as a function")


def check_dataflow(graph: onnx.GraphProto) -> None:
    """Refuse a graph whose tensors are written twice or whose nodes form a cycle."""
    sources = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    writer: dict[str, int] = {}  # tensor -> index of the node that writes it
    for index, node in enumerate(graph.node):
        for output in filter(None, node.output):
            if output in sources or output in writer:
                first = "a graph input or initializer" if output in sources else \
                    f"node '{_node_name(graph, writer[output])}'"
                raise OnnxSnnError(f"tensor '{output}' is written twice (by {first} and by node "
                                   f"'{_node_name(graph, index)}'): not a valid ONNX graph")
            writer[output] = index
    # Kahn's algorithm: a node is ready once every node it reads from has run.
    waiting = {i: {t for t in node.input if t in writer} for i, node in enumerate(graph.node)}
    readers: dict[str, list[int]] = {}
    for i, inputs in waiting.items():
        for tensor in inputs:
            readers.setdefault(tensor, []).append(i)
    ready = [i for i, inputs in waiting.items() if not inputs]
    while ready:
        for tensor in filter(None, graph.node[ready.pop()].output):
            for reader in readers.get(tensor, []):
                waiting[reader].discard(tensor)
                if not waiting[reader]:
                    ready.append(reader)
    known = sources | set(writer)
    for index, node in enumerate(graph.node):
        undefined = [name for name in node.input if name and name not in known]
        if undefined:
            raise OnnxSnnError(f"node '{_node_name(graph, index)}' reads tensor "
                               f"'{undefined[0]}', which no input, initializer or node "
                               "defines: not a valid ONNX graph")
    stuck = [_node_name(graph, i) for i, inputs in waiting.items() if inputs]
    if stuck:
        raise OnnxSnnError(f"the graph has a cycle: node {', '.join(map(repr, stuck[:5]))} "
                           "never get all their inputs; not a valid ONNX graph")


def _node_name(graph: onnx.GraphProto, index: int) -> str:
    node = graph.node[index]
    return node.name or f"{node.op_type} #{index}"
