"""Which axis of each tensor carries the batch, where it is not the first.

Time is folded into the batch (``onnx_snn.snn.time_folding``): a tensor [N, ...]
becomes [T·N, ...], with T the outermost factor. A transformer that permutes its
batch axis (attention on [L, N, D]) or a recurrent net with a time-major output
(CTC scores [steps, N, classes]) carries T·N along another axis k; neurons,
time-difference ops and the outputs must then move axis k to the front to see the
steps.

A tensor whose inferred shape has the batch symbol first is [N, ...]. Others are
measured: the ANN runs in onnxruntime on zeros with batch 1 and then 2 (inputs
without a batch axis get ones), and the batch axis is the one whose size doubles
(a tensor with no such single axis is taken as batch-first). An input's other
dynamic dims get one size for both runs, the first of ``PROBE_SIZES`` the model
runs with. The graph outputs are always measured, since a declared output shape
can be wrong and win over the inferred one (an exporter's [1, seqlen] for a
[seq, 1, C] output): where the measurement contradicts it, the output's shape is replaced by
the measured rank with the batch symbol on the measured axis. (An output whose size
does not follow the batch is left as it is: a net that runs only at batch 1, such
as one whose STFT frames the whole input, still folds, its static part running on
the one sample before the time broadcast.)
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnx_snn.graph.activations import carries_values
from onnx_snn.graph.dynamic_batch import BATCH_SYMBOL

#: Sizes tried, in order, for an input's dynamic dims other than the batch.
PROBE_SIZES = (64, 128, 256, 512, 1024, 4096, 16384)


def moved_batch_axes(model: onnx.ModelProto, graph: gs.Graph) -> dict[str, tuple[int, int]]:
    """{tensor name: (batch axis, rank)} for the float tensors of ``graph`` (the prepared
    ANN ``model``, imported) whose batch axis is not 0. Graph outputs whose declared
    shape the measurement contradicts get the measured form (see module doc)."""
    symbols = {t.shape[0] for t in graph.inputs if t.shape and isinstance(t.shape[0], str)}
    unknown = [t for node in graph.nodes for t in node.outputs
               if carries_values(t) and not (t.shape and t.shape[0] in symbols)]
    probed = {t.name: t for t in [*unknown, *(o for o in graph.outputs if carries_values(o))]}
    if not probed:
        return {}
    sizes = _measure(model, graph, list(probed))
    if sizes is None:
        return {}
    moved = {}
    outputs = {id(o) for o in graph.outputs}
    for name, tensor in probed.items():
        one, two = sizes[0][name], sizes[1][name]
        axis = batch_axis(one, two)
        if id(tensor) in outputs:
            _correct_output(tensor, one, two, axis)
        if axis:
            moved[name] = (axis, len(one))
    return moved


def batch_axis(one: tuple[int, ...], two: tuple[int, ...]) -> int | None:
    """The axis whose size doubles from shape ``one`` (batch 1) to ``two`` (batch 2);
    None where no single axis does."""
    doubled = [k for k, (a, b) in enumerate(zip(one, two)) if a > 0 and b == 2 * a]
    return doubled[0] if len(one) == len(two) and len(doubled) == 1 else None


def _correct_output(output: gs.Variable, one: tuple[int, ...], two: tuple[int, ...],
                  axis: int | None) -> None:
    """Give a graph output whose declared shape contradicts the measurement its
    measured rank and batch axis."""
    if axis is None:
        return
    shape = output.shape
    if shape is not None and len(shape) == len(one) and shape[axis] in (BATCH_SYMBOL, 1) \
            and BATCH_SYMBOL not in [d for k, d in enumerate(shape) if k != axis]:
        if shape[axis] != BATCH_SYMBOL:
            output.shape = [BATCH_SYMBOL if k == axis else d for k, d in enumerate(shape)]
        return
    output.shape = [BATCH_SYMBOL if k == axis else None for k in range(len(one))]


def _measure(model: onnx.ModelProto, graph: gs.Graph, names: list[str]
             ) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]] | None:
    """The shapes of tensors ``names`` for inputs of batch 1 and of batch 2, or None
    when an input's rank is unknown or the model runs with none of the probe sizes."""
    if any(t.shape is None for t in graph.inputs):
        return None
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime's own types; the conversion says later
        return None
    dynamic = any(not isinstance(d, int) or d <= 0 for t in graph.inputs if t.shape
                  for d in list(t.shape)[1:])
    for size in PROBE_SIZES if dynamic else PROBE_SIZES[:1]:
        try:
            return tuple({name: value.shape for name, value in
                          zip(names, session.run(names, _feed(graph, batch, size)))}
                         for batch in (1, 2))
        except Exception:  # noqa: BLE001 - too small for the model: the next size
            continue
    return None


def _feed(graph: gs.Graph, batch: int, size: int) -> dict[str, np.ndarray]:
    """Zeros of ``batch`` samples for each input, ``size`` for its other dynamic dims;
    ones, of the input's shape, for an input without a batch axis."""
    feed = {}
    for tensor in graph.inputs:
        dims = [d if isinstance(d, int) and d > 0 else size for d in tensor.shape or []]
        if tensor.shape is not None and not dims:
            feed[tensor.name] = np.ones([], np.dtype(tensor.dtype))
        else:
            feed[tensor.name] = np.zeros([batch, *dims[1:]], np.dtype(tensor.dtype))
    return feed
