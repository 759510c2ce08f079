"""Calibration's driver: run the ANN over the data in onnxruntime and feed each
activation's collector (docs/semantics.md, "Calibration statistics").

A batch that does not fit the memory budget (``onnx_snn.runtime.memory``) runs in
calls of fewer samples when every collector of the pass takes a batch in parts
(``Collector.splits``), with the statistics of the whole batch
(docs/chunked-execution.md)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from functools import partial
from math import prod
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnx_snn.calibration.collectors import BATCH_ROWS, Collector
from onnx_snn.calibration.result import Calibration, LayerCalibration
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.prepare import infer_shapes
from onnx_snn.io.data import DataSource, InputSpec, input_specs
from onnx_snn.runtime.chunks import BYTES_PER_LARGEST_VALUE
from onnx_snn.runtime.cluster import Cluster, map_batches
from onnx_snn.runtime.memory import announce, memory_budget
from onnx_snn.runtime.sessions import create_session, run_checked

#: The key of a batch's sample count in a ``FetchWorker`` result.
SAMPLES = "calibration__samples"


def calibrate(model: onnx.ModelProto, data: Any, hooks: dict[str, Collector],
              batch_size: int = 100, progress: bool = True,
              signed: Collection[str] = (), cluster: Cluster | None = None) -> Calibration:
    """Run ``model`` over ``data`` in onnxruntime and feed each Relu's hook.

    ``model`` should be prepared (``onnx_snn.graph.prepare.prepare``: opset 13+,
    node names unique), as ``convert`` does. ``hooks`` maps node names (Relus, or
    any node whose first output is to be measured) to their collectors; the nodes
    named in ``signed`` (signed sites) are measured by magnitude, |x|. ``data`` is
    anything ``onnx_snn.io.data.batches`` accepts. Each hook observes one pass over
    the data: the first, or, below ``layerwise`` collectors (threshold balancing),
    the pass after the last of theirs (``pass_levels``), so that it sees them
    final; the data is read once per pass. Shapes are inferred only when a measured
    activation's type or rank is not known yet. With ``cluster`` each pass's batches
    run on its Ray workers; the hooks observe their results in batch order, so the
    scales are the same bits (docs/semantics.md, "Distributed runs").
    """
    if not hooks:
        raise OnnxSnnError("no Relu to calibrate: hooks is empty")
    graph = gs.import_onnx(model)
    nodes = {node.name: node for node in graph.nodes}
    if any(name in nodes and (nodes[name].outputs[0].dtype is None
                              or nodes[name].outputs[0].shape is None) for name in hooks):
        graph = gs.import_onnx(infer_shapes(model))  # hook outputs take their dtypes
        nodes = {node.name: node for node in graph.nodes}
    missing = [name for name in hooks if name not in nodes]
    if missing:
        raise OnnxSnnError(f"no node named '{missing[0]}' in the model")
    levels = pass_levels(graph, hooks)
    make = GraphBuilder(graph, "calibration__")
    fetches = {name: hook.graph_outputs(graph, _measured(make, nodes[name], name in signed))
               for name, hook in hooks.items()}
    graph.outputs = [tensor for tensors in fetches.values() for tensor in tensors]
    graph.cleanup()
    measuring = gs.export_onnx(graph)
    # here, one session serves every pass; Ray workers open their own from the model
    session = create_session(measuring, native=False) if cluster is None else measuring
    source = data if isinstance(data, DataSource) else DataSource(data)  # once per pass
    passes = max(levels.values())
    specs = input_specs(model)
    values = {name: _values_per_sample([nodes[name].outputs[0]]) or 0 for name in hooks}
    graph_bytes = max(hook.graph_bytes * values[name] for name, hook in hooks.items())
    for level in range(1, passes + 1):
        active = {name: hook for name, hook in hooks.items() if levels[name] == level}
        sample_bytes = max(values.values()) * BYTES_PER_LARGEST_VALUE + graph_bytes + sum(
            hook.working_bytes * values[name] for name, hook in active.items())
        desc = "calibrating" if passes == 1 else f"calibrating, pass {level} of {passes}"
        feeds = {key: value for hook in hooks.values() for key, value in hook.feeds().items()}
        in_parts = all(hook.splits for hook in active.values())
        recipe = partial(FetchWorker, session, [t.name for name in active
                                                for t in fetches[name]], feeds,
                         "" if level == 1 else f"pass {level}, ",
                         _cuttable(specs) if in_parts else frozenset(), sample_bytes,
                         lazy=cluster is None)
        count = samples = 0
        for parts in map_batches(recipe, source, specs, batch_size, cluster,
                                 desc=desc, progress=progress):
            for results in parts:
                for name, hook in active.items():
                    fetched = [results[t.name] for t in fetches[name]]
                    hook.observe_part(fetched) if in_parts else hook.observe(fetched)
                samples += results[SAMPLES]
            if in_parts:
                for hook in active.values():
                    hook.batch_done()
            count += 1
        for hook in active.values():
            hook.pass_done()
    layers = [LayerCalibration(name, hook.scale, hook.mode, hook.momentum)
              for name, hook in hooks.items()]
    return Calibration(layers, batches=count, samples=samples, passes=passes)


def _values_per_sample(tensors: Iterable[gs.Variable]) -> int | None:
    """The most values one sample has in ``tensors``, among those whose shape is known
    but for its batch axis (None when none is)."""
    known = [prod(d for d in t.shape if isinstance(d, int)) for t in tensors
             if t.shape is not None and sum(not isinstance(d, int) for d in t.shape) == 1]
    return max(known, default=None)


def _cuttable(specs: list[InputSpec]) -> frozenset[str]:
    """The inputs a batch is cut along: all those with a batch axis, when that axis is
    free (a model of fixed batch runs its batch whole)."""
    batched = [spec for spec in specs if spec.batched]
    if any(isinstance(spec.shape[0], int) for spec in batched):
        return frozenset()
    return frozenset(spec.name for spec in batched)


def _measured(make: GraphBuilder, node: gs.Node, signed: bool) -> gs.Variable:
    """What a hook measures: the node's output, or its magnitude at a signed site."""
    activation = node.outputs[0]
    if not signed:
        return activation
    magnitude = make("Abs", [activation], activation.dtype)
    magnitude.shape = activation.shape
    return magnitude


def pass_levels(graph: gs.Graph, hooks: dict[str, Collector]) -> dict[str, int]:
    """The pass (from 1) in which each hook observes: one more than the deepest
    ``layerwise`` hook upstream of it. Threshold balancing thus reaches its fixed
    point exactly: each layer is balanced once, on the final output of those above."""
    reached: dict[int, int] = {}  # tensor id -> the deepest layerwise pass that feeds it
    levels = {}
    for node in graph.toposort().nodes:
        above = max((reached.get(id(tensor), 0) for tensor in node.inputs), default=0)
        hook = hooks.get(node.name)
        if hook is not None:
            levels[node.name] = above + 1
        below = above + 1 if hook is not None and hook.layerwise else above
        for tensor in node.outputs:
            reached[id(tensor)] = below
    return levels


class FetchWorker:
    """Per batch: the results of the calibration graph's outputs ``names``, by name, with
    ``feeds`` (the hooks' extra inputs, fixed within a pass) added to the batch, and
    the sample count under ``SAMPLES``, for each call the batch runs in: one call, or,
    when the batch does not fit the memory budget at ``sample_bytes`` a sample and its
    ``cuttable`` inputs allow it, calls of as many samples as fit. ``lazy``: the calls
    run as their results are read (an iterator), else all at once (a list, as a Ray
    worker returns)."""

    def __init__(self, model: onnx.ModelProto | ort.InferenceSession, names: list[str],
                 feeds: dict[str, Any], where: str, cuttable: frozenset[str] = frozenset(),
                 sample_bytes: int | None = None, lazy: bool = False) -> None:
        self.session = model if isinstance(model, ort.InferenceSession) \
            else create_session(model, native=False)
        self.names, self.feeds, self.where = names, feeds, where
        self.cuttable, self.lazy = cuttable, lazy
        self.batch_rows = BATCH_ROWS in {i.name for i in self.session.get_inputs()}
        budget = memory_budget() if cuttable and sample_bytes else None
        #: The most samples a call may take (None: a whole batch).
        self.call_rows = None if budget is None else budget // sample_bytes
        if self.call_rows == 0:
            raise OnnxSnnError(f"calibration: one sample needs about {sample_bytes:,} bytes, "
                               f"more than the memory budget of {budget:,} bytes: raise "
                               "--memory-limit")
        self.index = 0

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]] | list[dict[str, Any]]:
        rows = next(iter(batch.values())).shape[0] if not self.cuttable else \
            batch[next(iter(self.cuttable))].shape[0]
        step = rows if self.call_rows is None else max(min(rows, self.call_rows), 1)
        if step < rows:
            announce(f"calibration batches of {rows} samples run in calls of {step} samples")
        where = f"calibration data, {self.where}batch {self.index}"
        calls = (self._call(batch, rows, first, step, where) for first in range(0, rows, step))
        self.index += 1  # of this worker's batches (a shard's, on a cluster)
        return calls if self.lazy else list(calls)

    def _call(self, batch: dict[str, Any], rows: int, first: int, step: int,
              where: str) -> dict[str, Any]:
        """The results of samples ``first`` to ``first + step`` of the batch."""
        feed = {name: array[first:first + step] if name in self.cuttable and step < rows
                else array for name, array in batch.items()}
        part = min(step, rows - first)
        if self.batch_rows:
            feed[BATCH_ROWS] = np.array([rows, part], np.int64)
        results = run_checked(self.session, self.names, {**feed, **self.feeds}, where)
        return {**dict(zip(self.names, results)), SAMPLES: part}
