"""The standard format: only ai.onnx ops, for runtimes other than onnxruntime and
tools that reject custom domains. Each IFNode becomes the Scan over T of its step,
specialised to the node's reset mode (no If); neuron ops of other domains
(user-defined neurons) have their local functions inlined.

Where every neuron is an IFNode, the model is first put in the chunked form
(``onnx_snn.export.chunked``): its potentials and its time ops' states are inputs
with initializers (their values before step 1) and extra outputs, so that it runs
in chunks of steps like the chunked format (docs/chunked-execution.md)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.inliner import inline_local_functions

from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.chunked import chunk_refusal, to_chunked
from onnx_snn.export.common import (
    IFNeuronStep,
    custom_nodes,
    drop_unused_domains,
    folded_copy,
    identifier,
    is_if_node,
    names,
    replace_all,
)
from onnx_snn.graph.naming import NameScope
from onnx_snn.io.models import ModelLike
from onnx_snn.ops.function_bodies import scan_nodes


def to_standard(model: ModelLike) -> onnx.ModelProto:
    """The model with only ai.onnx ops (and no functions); same interface and outputs.

    Each IFNode becomes a Scan of ``if_step`` for its own reset mode (from its state
    input, when the model has its chunked form, see the module docstring); other
    neuron ops are replaced by their inlined local functions; any other
    custom-domain op is an error.
    """
    model, _ = folded_copy(model)
    if chunk_refusal(model) is None:
        model = to_chunked(model)
    graph = model.graph
    scope = NameScope(names(graph))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if not is_if_node(node):
            nodes.append(node)
            continue
        neuron = IFNeuronStep.of(node, scope.prefix(f"{identifier(node.name)}__if_"))
        graph.initializer.extend(neuron.constants())
        if len(node.input) > 2:  # the chunked form's potentials, in and out
            v_start, v_next = node.input[2], node.output[1]
        else:
            v_start, v_next = f"{neuron.prefix}v_start", None
            graph.initializer.append(numpy_helper.from_array(np.asarray(neuron.v_start),
                                                             v_start))
        nodes += scan_nodes(neuron.step, neuron.hard_reset, node.input[0], node.input[1],
                            v_start, node.output[0], neuron.prefix, neuron.broadcast_input,
                            v_next)
    replace_all(graph.node, nodes)
    custom = custom_nodes(graph.node)
    if custom:
        defined = {(f.domain, f.name) for f in model.functions}
        for node in custom:
            if (node.domain, node.op_type) not in defined:
                raise OnnxSnnError(f"node '{node.name}' is {node.domain}::{node.op_type}, which "
                                   "has no local function; the standard format has only "
                                   "ai.onnx ops")
        model = inline_local_functions(model)
    del model.functions[:]
    drop_unused_domains(model)
    return onnx.shape_inference.infer_shapes(model)
