"""What stops a conversion, checked once for ``convert`` and ``inspect``.

On a prepared graph, with the rectifiers that will become neurons:

- with ``keep_analog``, nonlinear ops are kept running step by step, with a
  warning that says their outputs need not converge (without it they become
  time-difference ops, ``onnx_snn.graph.temporal``);
- at least one rectifier must be converted;
- a control-flow node (If, Loop, Scan) that spiking values reach may neither
  hold rectifiers or other activations in its body (they would run per step on
  spikes) nor take its condition or trip count from spiking values;
- no node that spiking values reach may drop the batch axis (a Reshape to [-1]
  of a batch-1 export), since time is folded into it;
- every graph output must carry a batch axis, so that time can be folded into
  it: an output that no input reaches (a constant), a scalar, or one whose
  declared shape is static with no batch-sized axis is refused. The batch may sit
  on another axis than the first (a time-major CTC output [steps, N, classes]):
  ``onnx_snn.graph.batch_axes`` measures where, and refuses an output whose size
  does not follow the batch.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.activations import (
    NONLINEAR,
    downstream,
    nonlinear_activations,
    rectifier_cap,
)
from onnx_snn.graph.dynamic_batch import BATCH_SYMBOL, batch_losing_nodes
from onnx_snn.graph.registry import CONTROL_FLOW

#: Inputs of a control-flow op that choose what runs: If's condition, Loop's trip
#: count and condition.
_DECIDING_INPUTS = {"If": (0,), "Loop": (0, 1)}


def check_activations(graph: gs.Graph, keep_analog: bool) -> list[gs.Node]:
    """The activations that ``keep_analog`` keeps running step by step (none without
    it: they become time-difference ops)."""
    return nonlinear_activations(graph) if keep_analog else []


def kept_analog_warning(nodes: list[gs.Node]) -> str:
    listing = ", ".join(f"{node.op} '{node.name}'" for node in nodes)
    return (f"keeping {listing} analog: applied to spiking values step by step, a nonlinear "
            "op does not average to its ANN output, so the output error need not shrink as "
            "T grows (measured on a MobileNetV3-style net, benchmarks/beyond_relu.py: "
            "1.22 x max|ANN| at T=16, 1.36 at T=128, where time-difference ops, the "
            "default, reach 0.08); measure it (onnx-snn eval --ann, or report's "
            "rate_vs_ann_r)")


def check_convertible(graph: gs.Graph, converted: Collection[str]) -> None:
    """Refuse what the time folding cannot handle (see module doc), naming the nodes."""
    if not converted:
        raise OnnxSnnError("no Relu to convert")
    spiking = downstream(graph, [node for node in graph.nodes if node.name in converted])
    for node in graph.nodes:
        if node.op not in CONTROL_FLOW or id(node) not in spiking:
            continue
        inner = [n for n in _body_nodes(node)
                 if rectifier_cap(n) is not None or n.op in NONLINEAR]
        if inner:
            listing = ", ".join(f"{n.op} '{n.name}'" for n in inner)
            raise OnnxSnnError(f"{listing} inside the body of {node.op} '{node.name}', which "
                               "spiking values reach: onnx-snn converts activations of the "
                               "top-level graph only")
        deciding = [node.inputs[i] for i in _DECIDING_INPUTS.get(node.op, ())
                    if i < len(node.inputs) and node.inputs[i].name]
        if any(_reached(tensor, spiking) for tensor in deciding):
            raise OnnxSnnError(f"{node.op} '{node.name}' takes its condition from spiking "
                               "values, which change from step to step: it cannot be folded "
                               "over time")
    _check_outputs(graph)
    _check_batch_kept(graph, spiking)


def _check_batch_kept(graph: gs.Graph, spiking: set[int]) -> None:
    """Refuse a node that spiking values reach and that drops the batch axis (it would
    mix the time steps folded into it), naming it."""
    lost = batch_losing_nodes(gs.export_onnx(graph.copy().cleanup(), do_type_check=False))
    for node in graph.nodes:
        if id(node) in spiking and node.name in lost:
            raise OnnxSnnError(f"{node.op} '{node.name}' turns a tensor with a batch axis into "
                               f"'{lost[node.name]}', which has none: the time steps folded "
                               "into the batch would mix (a batch-1 export can write a "
                               "flatten as a Reshape to [-1]; export with a dynamic batch)")


def _body_nodes(node: gs.Node) -> list[gs.Node]:
    """Every node of the subgraphs ``node`` holds, nested ones included."""
    found = []
    pending = [value for value in node.attrs.values() if isinstance(value, gs.Graph)]
    while pending:
        body = pending.pop()
        for inner in body.nodes:
            found.append(inner)
            pending.extend(v for v in inner.attrs.values() if isinstance(v, gs.Graph))
    return found


def _reached(tensor: gs.Tensor, nodes: set[int]) -> bool:
    return any(id(producer) in nodes for producer in tensor.inputs)


def _check_outputs(graph: gs.Graph) -> None:
    data_inputs = [t for t in graph.inputs if isinstance(t, gs.Variable)]
    fed = downstream(graph, [], data_inputs)
    for output in graph.outputs:
        from_input = output in data_inputs or any(id(p) in fed for p in output.inputs)
        shape = output.shape
        if not from_input:
            raise OnnxSnnError(f"output '{output.name}' does not depend on the input: a "
                               "spiking model's outputs are per step and sample, [T, N, ...]")
        if shape is not None and (len(shape) == 0 or isinstance(shape[0], int)
                                  and shape[0] != 1 and BATCH_SYMBOL not in shape
                                  and 1 not in shape):
            raise OnnxSnnError(f"output '{output.name}' has shape {list(shape)}, with no batch "
                               "axis: onnx-snn folds time into the batch axis, so every "
                               "output must carry one ([N, ...], or [steps, N, ...])")
