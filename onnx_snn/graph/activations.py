"""Activations: which become spiking neurons, and which are nonlinear ops without a
rate-coded IF equivalent.

- Rectifiers become neurons: ``Relu``, and ``Clip`` with min 0 (ReLU6 and the
  like), whose scale is then capped at the Clip's max.
- Other nonlinear activations become time-difference ops where spiking values
  reach them (``onnx_snn.graph.temporal``), or run step by step with
  ``keep_analog``; a ``Softmax``/``LogSoftmax`` at the output (no rectifier or
  weighted layer after it) may be dropped on request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.graph.registry import facts, ops_where

#: Activations with no rate-coded IF equivalent (a Clip is one unless its min is 0).
NONLINEAR = ops_where(lambda f: f.nonlinear)


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Constant" and "value" in producer.attrs:
        return np.asarray(producer.attrs["value"].values)
    return None


def carries_values(tensor: gs.Tensor) -> bool:
    """A float tensor that is not a constant: shapes, indices and constants are
    parameters of the ops that read them, not values that vary."""
    dtype = tensor.dtype
    return bool(tensor.name) and constant_value(tensor) is None and \
        (dtype is None or np.issubdtype(np.dtype(dtype), np.floating))


def rectifier_cap(node: gs.Node) -> float | None:
    """``inf`` for a Relu, ``a`` for a Clip(0, a) (``inf`` without a max), else None.

    Only on floating-point values: an integer Relu or Clip (a clamped index after an
    ArgMax, a shape computation) is not an activation and is left alone."""
    dtype = node.outputs[0].dtype if node.op in ("Relu", "Clip") and node.outputs else None
    if dtype is not None and not np.issubdtype(np.dtype(dtype), np.floating):
        return None
    if node.op == "Relu":
        return math.inf
    if node.op != "Clip":
        return None
    bounds = list(node.inputs[1:3])
    low = constant_value(bounds[0]) if bounds and bounds[0].name else None
    high = constant_value(bounds[1]) if len(bounds) > 1 and bounds[1].name else None
    if low is None or low.size != 1 or float(low) != 0.0:
        return None
    if len(bounds) > 1 and bounds[1].name and high is None:
        return None  # a max that is not a constant
    cap = math.inf if high is None else float(high)
    return cap if cap > 0 else None


def downstream(graph: gs.Graph, sources: Iterable[gs.Node],
               tensors: Iterable[gs.Tensor] = ()) -> set[int]:
    """Ids of every node fed, directly or not, by the nodes ``sources`` (excluded) or
    by ``tensors``."""
    seen: set[int] = set()
    frontier = [out for node in sources for out in node.outputs] + list(tensors)
    while frontier:
        tensor = frontier.pop()
        for consumer in tensor.outputs:
            if id(consumer) not in seen:
                seen.add(id(consumer))
                frontier.extend(consumer.outputs)
    return seen


def is_output_head(node: gs.Node, graph: gs.Graph) -> bool:
    """A Softmax/LogSoftmax after which no rectifier or weighted layer follows."""
    if not facts(node.op).output_head:
        return False
    after = downstream(graph, [node])
    return not any(id(n) in after and (facts(n.op).learned or rectifier_cap(n) is not None)
                   for n in graph.nodes)


def nonlinear_activations(graph: gs.Graph) -> list[gs.Node]:
    """Nonlinear activations other than rectifiers and output heads, in graph order:
    what ``keep_analog`` keeps running step by step."""
    return [node for node in graph.nodes
            if node.op in NONLINEAR and rectifier_cap(node) is None
            and not is_output_head(node, graph)]


def drop_output_heads(graph: gs.Graph) -> list[gs.Node]:
    """Remove output Softmax/LogSoftmax nodes (returned, disconnected); their outputs then
    carry the logits."""
    dropped = []
    for node in [n for n in graph.nodes if is_output_head(n, graph)]:
        logits, result = node.inputs[0], node.outputs[0]
        producer = logits.inputs[0] if logits.inputs else None
        if producer is None or len(logits.outputs) != 1 or logits in graph.outputs:
            continue  # the logits are an input or used elsewhere: keep the head
        producer.outputs[producer.outputs.index(logits)] = result
        node.inputs.clear()
        node.outputs.clear()
        dropped.append(node)
    return dropped
