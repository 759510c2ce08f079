"""Give a graph with spiking neurons a time axis, folded into the batch axis.

The converted model's interface (docs/semantics.md, "Running and reading")::

    inputs:  each ANN input x, with a leading time axis: [S, N, ...], where
             S = 1 means direct encoding (the same input at every step) and
             S = T is a sequence (events, Poisson spikes, ...);
             timesteps: int64 scalar T, chosen at run time.
    outputs: each ANN output, per step: [T, N, ...].

Inside, every tensor carries T·N samples along axis 0 except the *static*
part: nodes that no neuron feeds. They run on S·N samples, once per input with
direct encoding, and their results are broadcast over time only where a
temporal node reads them. Shape computations on static tensors that a temporal
node uses are recomputed on the broadcast tensor, so they see T·N samples.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.activations import carries_values
from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.dynamic_batch import BATCH_SYMBOL
from onnx_snn.graph.naming import NameScope
from onnx_snn.graph.pooling import check_policy
from onnx_snn.graph.registry import SHAPE_OPS
from onnx_snn.graph.temporal import (
    GATED,
    LINEAR,
    SUMMED,
    TIME_DIFFERENCE,
    behaviour_over_time,
)
from onnx_snn.snn.neurons import is_neuron
from onnx_snn.snn.temporal_pooling import pool_over_time
from onnx_snn.snn.time_difference import (
    TimeDifference,
    back_permutation,
    front_permutation,
)

#: Neuron attribute: 1 when the neuron reads a static input [S, N, ...] itself.
BROADCAST = "broadcast_input"
_TO_END = np.iinfo(np.int64).max


class TimeFolding:
    """The pass that adds the time axis; ``timesteps`` is the T graph input that
    the neurons already read. New names come from ``scope``.

    An ArgMax that spiking values reach (a label output, as scikit-learn
    converters write it) reads the scores summed over steps 1..t instead of
    step t alone, so its label converges like the scores do; the running sums
    are listed in ``accumulators``. With ``maxpool`` "td" or "gated",
    each MaxPool that spiking values reach is rewritten by
    ``onnx_snn.snn.temporal_pooling``; with the others, so is each one that pools
    analog values, as "td" (those in ``spike_pools`` pool spikes and run per step).
    With ``time_difference``, every other node that is not affine in the
    time-varying values it reads (GELU, LayerNorm, Softmax, a product of two of
    them, ...) becomes a time-difference op
    (``onnx_snn.snn.time_difference``); without it such nodes run step by step
    (``keep_analog``). The running sums and means of these rewrites are accumulators
    too, their differences are listed in ``differences``, and the tensors the TD ops
    compute at each step in ``computed``. ``moved`` gives the
    tensors whose batch axis is not the first, as (axis, rank)
    (``onnx_snn.graph.batch_axes``): neurons, time-difference ops and broadcasts over
    time move that axis to the front and back.
    """

    def __init__(self, timesteps: gs.Variable, scope: NameScope | None = None,
                 maxpool: str = "keep", time_difference: bool = True,
                 moved: dict[str, tuple[int, int]] | None = None,
                 spike_pools: Collection[str] = ()) -> None:
        self.timesteps = timesteps
        self.scope = scope
        self.maxpool = check_policy(maxpool)
        self.spike_pools = set(spike_pools)
        self.time_difference = time_difference
        self.moved = moved or {}
        self.accumulators: list[str] = []
        self.differences: list[str] = []
        self.computed: list[str] = []

    def __call__(self, graph: gs.Graph) -> gs.Graph:
        graph.toposort()
        scope = self.scope or NameScope.of(graph)
        make = GraphBuilder(graph, "time_fold__", scope)
        data_inputs = [t for t in graph.inputs if t is not self.timesteps and has_batch_axis(t)]
        if not data_inputs:
            raise OnnxSnnError("no input has a batch axis: onnx-snn folds time into the batch "
                               "axis of the inputs")
        temporal, temporal_tensors, batch, shape_values = self._classify(graph, data_inputs)
        folded = {id(x): self._fold_input(make, x, scope) for x in data_inputs}
        steps = make("Reshape", [self.timesteps, make.const([1])], np.int64)
        td = TimeDifference(make, steps, lambda tensor: self.moved.get(tensor.name))
        samples = make("Slice", [make("Shape", [folded[id(data_inputs[0])]], np.int64),
                                 make.const([0]), make.const([1])], np.int64)
        broadcast: dict[int, gs.Variable] = {}

        def over_time(tensor: gs.Variable) -> gs.Variable:
            """``tensor`` [S·N, ...] broadcast to [T·N, ...] (cached)."""
            if id(tensor) not in broadcast:
                layout = self.moved.get(tensor.name)
                front = tensor if layout is None else make(
                    "Transpose", [tensor], tensor.dtype, {"perm": front_permutation(layout)})
                rows = make("Reshape", [front, make("Concat", [samples, make.const([-1])],
                                                    np.int64, {"axis": 0})], tensor.dtype)
                tiled = _tile(make, rows, make("Concat", [steps, make.const([1])], np.int64,
                                               {"axis": 0}))
                result = make("Reshape", [tiled, _with_rows(make, front, [-1])], tensor.dtype)
                broadcast[id(tensor)] = result if layout is None else make(
                    "Transpose", [result], tensor.dtype, {"perm": back_permutation(layout)})
            return broadcast[id(tensor)]

        retimed: dict[int, gs.Variable] = {}

        def retime(value: gs.Variable) -> gs.Variable:
            """Recompute a shape value from static tensors on their broadcast versions."""
            if id(value) not in retimed:
                producer = value.inputs[0]
                inputs = [over_time(t) if id(t) in batch and producer.op in SHAPE_OPS
                          else retime(t) if id(t) in shape_values else t
                          for t in producer.inputs]
                outputs = [gs.Variable(scope.name(f"{t.name}__retimed"), t.dtype)
                           for t in producer.outputs]
                graph.nodes.append(gs.Node(producer.op, scope.name(f"{producer.name}__retimed"),
                                           attrs=dict(producer.attrs), inputs=inputs,
                                           outputs=outputs, domain=producer.domain))
                for old, new in zip(producer.outputs, outputs):
                    retimed[id(old)] = new
            return retimed[id(value)]

        # Spikes are [T·N, ...]; shape inference cannot see through the neuron's If on
        # BROADCAST, so their shapes are declared (ReluToNeuron gave them the ANN's).
        ranks = {id(node.outputs[0]): [None, *node.outputs[0].shape[1:]]
                 for node in graph.nodes
                 if is_neuron(node) and node.outputs[0].shape is not None}
        for node in [n for n in graph.nodes if id(n) in temporal]:
            if is_neuron(node):
                self._batch_first(make, node, batch)
            for index, tensor in enumerate(node.inputs):
                if id(tensor) in batch and index == 0 and is_neuron(node) \
                        and BROADCAST in node.attrs:
                    node.inputs[0] = _split_steps(make, tensor, samples)
                    node.attrs[BROADCAST] = 1  # the neuron reads [S, N, ...] itself
                elif id(tensor) in batch:
                    node.inputs[index] = over_time(tensor)
                elif id(tensor) in shape_values:
                    node.inputs[index] = retime(tensor)
            if is_neuron(node):
                continue
            varying = [id(t) in temporal_tensors and carries_values(t) for t in node.inputs]
            behaviour = behaviour_over_time(node, varying, self.maxpool, self.time_difference,
                                            self.spike_pools)
            if behaviour == SUMMED:
                node.inputs[0] = td.running_sum(node.inputs[0])
            elif node.op == "MaxPool" and behaviour in (TIME_DIFFERENCE, GATED):
                pool_over_time(node, "gated" if behaviour == GATED else "td", td)
            elif behaviour == TIME_DIFFERENCE:
                td.rewrite(node, varying)
            elif behaviour == LINEAR:
                td.affine(node, varying)
        self.accumulators += td.accumulators
        self.differences += td.differences
        self.computed += td.computed

        graph.outputs = [self._unfold_output(make, out, steps, over_time, scope,
                                             temporal=id(out) not in batch)
                         for out in graph.outputs]
        graph.inputs = [folded.get(id(x), x) for x in graph.inputs if x is not self.timesteps]
        graph.inputs.append(self.timesteps)
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Variable) and tensor not in graph.inputs \
                    and tensor not in graph.outputs:
                tensor.shape = ranks.get(id(tensor), _folded_shape(tensor.shape))
        graph.cleanup().toposort()
        return graph

    def _batch_first(self, make: GraphBuilder, neuron: gs.Node, batch: set[int]) -> None:
        """Around a neuron whose input carries the batch on another axis, transpose that
        axis to the front and back (the neuron steps along axis 0)."""
        source = neuron.inputs[0]
        while source.name not in self.moved and source.inputs and \
                source.inputs[0].op in ("Mul", "Add"):  # the input gain, a bias shift
            source = source.inputs[0].inputs[0]
        layout = self.moved.get(source.name)
        if layout is None:
            return
        given, spikes = neuron.inputs[0], neuron.outputs[0]
        front = make("Transpose", [given], given.dtype, {"perm": front_permutation(layout)})
        if id(given) in batch:
            batch.add(id(front))
        neuron.inputs[0] = front
        neuron.outputs[0] = gs.Variable(make.name(f"{neuron.name}_batch_first"), spikes.dtype)
        make("Transpose", [neuron.outputs[0]], spikes.dtype,
             {"perm": back_permutation(layout)}, output=spikes)

    def _classify(self, graph: gs.Graph, data_inputs: list[gs.Variable]):
        """Ids of temporal nodes and tensors, static batch tensors and static shape
        values."""
        temporal: set[int] = set()
        temporal_tensors = {id(self.timesteps)}
        batch = {id(x) for x in data_inputs}
        shape_values: set[int] = set()
        for node in graph.nodes:
            ids = [id(t) for t in node.inputs]
            outputs = [id(t) for t in node.outputs]
            if any(i in temporal_tensors for i in ids):
                temporal.add(id(node))
                temporal_tensors.update(outputs)
            elif node.op in SHAPE_OPS and any(i in batch for i in ids):
                shape_values.update(outputs)
            elif any(i in batch for i in ids):
                batch.update(outputs)
            elif any(i in shape_values for i in ids):
                shape_values.update(outputs)
        return temporal, temporal_tensors, batch, shape_values

    @staticmethod
    def _fold_input(make: GraphBuilder, x: gs.Variable, scope: NameScope) -> gs.Variable:
        """Replace input ``x`` by a new input with a time axis, reshaped back into ``x``."""
        sample_dims = None if x.shape is None else list(x.shape[1:])
        outer = gs.Variable(x.name, x.dtype, None if sample_dims is None
                            else ["S", "N", *sample_dims])
        x.name = scope.name(f"{x.name}__folded")
        sample_shape = make("Slice", [make("Shape", [outer], np.int64), make.const([2]),
                                      make.const([_TO_END])], np.int64)
        make("Reshape", [outer, make("Concat", [make.const([-1]), sample_shape], np.int64,
                                     {"axis": 0})], output=x)
        return outer

    def _unfold_output(self, make: GraphBuilder, out: gs.Variable, steps: gs.Variable,
                       over_time, scope: NameScope, temporal: bool) -> gs.Variable:
        """Graph output ``out`` [T·N, ...] reshaped to [T, N, ...] under its own name; one
        with the batch on axis k (``moved``) becomes [T, ...] with N on axis k + 1."""
        name = out.name
        layout = self.moved.get(name)
        source = out if temporal else over_time(out)
        out.name = scope.name(f"{name}__folded")
        dims = None if out.shape is None or layout is not None and len(out.shape) != layout[1] \
            else list(out.shape)
        if layout is None:
            result = gs.Variable(name, out.dtype, None if not dims else ["T", "N", *dims[1:]])
            make("Reshape", [source, make("Concat", [steps, _with_rows(make, source, [-1])],
                                          np.int64, {"axis": 0})], output=result)
            return result
        axis, rank = layout
        dims = dims or [None] * rank
        result = gs.Variable(name, out.dtype,
                             ["T", *("N" if k == axis else d for k, d in enumerate(dims))])
        front = make("Transpose", [source], out.dtype, {"perm": front_permutation(layout)})
        split = make("Reshape", [front, make("Concat", [steps, _with_rows(make, front, [-1])],
                                             np.int64, {"axis": 0})], out.dtype)
        make("Transpose", [split], out.dtype,
             {"perm": [0, *(1 + k for k in back_permutation(layout))]}, output=result)
        return result


def has_batch_axis(tensor: gs.Variable) -> bool:
    """Whether a graph input carries samples along its first axis: an input without a
    batch axis (a rank-0 setting such as a pitch net's fmin) is fed as it is at every
    step, like a constant (``onnx_snn.io.constant_inputs``)."""
    return tensor.shape is None or len(tensor.shape) > 0


def _folded_shape(shape: list | None) -> list | None:
    """A tensor's shape once time is folded into its batch axis: [N, ...] becomes
    [?, ...] (S·N or T·N rows); any other shape is no longer known for sure."""
    if shape and shape[0] == BATCH_SYMBOL:
        return [None, *shape[1:]]
    return None


def _tile(make: GraphBuilder, rows: gs.Variable, shape: gs.Variable) -> gs.Variable:
    """``rows`` [S, F] broadcast to ``shape`` [T, 1]: [T, F].

    Float tensors are multiplied by ones, which is exact and, in onnxruntime,
    about twice as fast as Expand (a multithreaded elementwise op).
    """
    if rows.dtype != np.float32:
        return make("Expand", [rows, shape], rows.dtype)
    ones = make("ConstantOfShape", [shape], np.float32,
                {"value": gs.Constant("one", np.ones(1, np.float32))})
    return make("Mul", [rows, ones], np.float32)


def _with_rows(make: GraphBuilder, tensor: gs.Variable, rows: list[int]) -> gs.Variable:
    """The shape of ``tensor`` with its first dimension replaced by ``rows``."""
    tail = make("Slice", [make("Shape", [tensor], np.int64), make.const([1]),
                          make.const([_TO_END])], np.int64)
    return make("Concat", [make.const(rows), tail], np.int64, {"axis": 0})


def _split_steps(make: GraphBuilder, tensor: gs.Variable, steps: gs.Variable) -> gs.Variable:
    """``tensor`` [S·N, ...] reshaped to [S, N, ...]; ``steps`` is S as a 1-D shape."""
    shape = make("Concat", [steps, _with_rows(make, tensor, [-1])], np.int64, {"axis": 0})
    return make("Reshape", [tensor, shape], tensor.dtype)

