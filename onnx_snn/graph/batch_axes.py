"""Which axis of each tensor carries the batch, where it is not the first.

Time is folded into the batch (``onnx_snn.snn.time_folding``): a tensor [N, ...]
becomes [T·N, ...], with T the outermost factor. A transformer that permutes its
batch axis (attention on [L, N, D]) carries T·N along another axis k; neurons and
time-difference ops must then move axis k to the front to see the steps.

A tensor whose inferred shape has the batch symbol first is [N, ...]. Others are
measured: the ANN runs in onnxruntime on zeros with batch 1 and then 2, and the
batch axis is the one whose size doubles (the input's other dims must be static;
a tensor with no such single axis is taken as batch-first).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnx_snn.graph.activations import carries_values


def moved_batch_axes(model: onnx.ModelProto, graph: gs.Graph) -> dict[str, tuple[int, int]]:
    """{tensor name: (batch axis, rank)} for the float tensors of ``graph`` (the prepared
    ANN ``model``, imported) whose batch axis is not 0."""
    symbols = {t.shape[0] for t in graph.inputs if t.shape and isinstance(t.shape[0], str)}
    unknown = [t for node in graph.nodes for t in node.outputs
               if carries_values(t) and not (t.shape and t.shape[0] in symbols)]
    if not unknown:
        return {}
    sizes = [_shapes(model, graph, [t.name for t in unknown], batch) for batch in (1, 2)]
    if sizes[0] is None:
        return {}
    moved = {}
    for tensor in unknown:
        one, two = sizes[0][tensor.name], sizes[1][tensor.name]
        doubled = [k for k, (a, b) in enumerate(zip(one, two)) if a > 0 and b == 2 * a]
        if len(one) == len(two) and len(doubled) == 1 and doubled[0] != 0:
            moved[tensor.name] = (doubled[0], len(one))
    return moved


def _shapes(model: onnx.ModelProto, graph: gs.Graph, names: list[str], batch: int
            ) -> dict[str, tuple[int, ...]] | None:
    """The shapes of tensors ``names`` for an all-zeros input of ``batch`` samples, or
    None when an input has a dynamic dim besides the batch."""
    feed = {}
    for tensor in graph.inputs:
        dims = list(tensor.shape or [])[1:]
        if tensor.shape is None or not all(isinstance(d, int) for d in dims):
            return None
        feed[tensor.name] = np.zeros([batch, *dims], dtype=np.dtype(tensor.dtype))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return {name: value.shape for name, value in zip(names, session.run(names, feed))}
