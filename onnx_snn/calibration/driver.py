"""Calibration's driver: run the ANN over the data in onnxruntime and feed each
activation's collector (SPEC §2)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import onnx
import onnx_graphsurgeon as gs
from tqdm.auto import tqdm

from onnx_snn.calibration.collectors import Collector
from onnx_snn.calibration.result import Calibration, LayerCalibration
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.prepare import infer_shapes
from onnx_snn.io.data import BatchStream, batches, input_specs
from onnx_snn.runtime.sessions import create_session, run_checked


def calibrate(model: onnx.ModelProto, data: Any, hooks: dict[str, Collector],
              batch_size: int = 100, progress: bool = True,
              signed: Collection[str] = ()) -> Calibration:
    """Run ``model`` over ``data`` in onnxruntime and feed each Relu's hook.

    ``model`` should be prepared (``onnx_snn.graph.prepare.prepare``: opset 13+,
    node names unique), as ``convert`` does. ``hooks`` maps node names (Relus, or
    any node whose first output is to be measured) to their collectors; the nodes
    named in ``signed`` (signed sites) are measured by magnitude, |x|. ``data`` is
    anything ``onnx_snn.io.data.batches`` accepts. Each hook observes one pass over
    the data: the first, or, below ``layerwise`` collectors (threshold balancing),
    the pass after the last of theirs (``pass_levels``), so that it sees them
    final; the data is read once per pass. Shapes are inferred only when a measured
    activation's type or rank is not known yet.
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
    session = create_session(gs.export_onnx(graph), native=False)
    stream = batches(data, input_specs(model), batch_size)
    passes = max(levels.values())
    for level in range(1, passes + 1):
        active = {name: hook for name, hook in hooks.items() if levels[name] == level}
        desc = "calibrating" if passes == 1 else f"calibrating, pass {level} of {passes}"
        count, samples = _one_pass(session, stream, hooks, active, fetches, desc, progress,
                                   "" if level == 1 else f"pass {level}, ")
        for hook in active.values():
            hook.pass_done()
    layers = [LayerCalibration(name, hook.scale, hook.mode, hook.momentum)
              for name, hook in hooks.items()]
    return Calibration(layers, batches=count, samples=samples, passes=passes)


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


def _one_pass(session: Any, stream: BatchStream, hooks: dict[str, Collector],
              active: dict[str, Collector], fetches: dict[str, list[gs.Variable]], desc: str,
              progress: bool, where: str) -> tuple[int, int]:
    """One pass over the data: every hook feeds its inputs, the ``active`` ones observe
    their results (only theirs are computed). Returns the batch and sample counts."""
    names = [t.name for name in active for t in fetches[name]]
    samples = count = 0
    for index, batch in enumerate(tqdm(stream, total=stream.num_batches, desc=desc,
                                       unit="batch", disable=None if progress else True,
                                       leave=False)):
        feed = dict(batch)
        for hook in hooks.values():
            feed.update(hook.feeds())
        results = dict(zip(names, run_checked(session, names, feed,
                                              f"calibration data, {where}batch {index}")))
        for name, hook in active.items():
            hook.observe([results[t.name] for t in fetches[name]])
        samples += next(iter(batch.values())).shape[0]
        count += 1
    return count, samples
