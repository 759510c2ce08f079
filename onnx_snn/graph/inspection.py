"""What a conversion will do to a model, found before anything runs.

``inspect_model`` lists every op and how it converts (neuron, signed neuron,
time-difference op, linear, analog before the first neuron; ``inspect_graph``),
every layer with a caveat in a spiking net (a MaxPool kept over spikes; with
``keep_analog``, nonlinear ops run step by step), and the input and output shapes
of the ANN and of the spiking model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.activations import (
    carries_values,
    downstream,
    drop_output_heads,
    is_output_head,
    rectifier_cap,
)
from onnx_snn.graph.convertibility import check_activations, check_convertible
from onnx_snn.graph.pooling import TEMPORAL_POLICIES, apply_maxpool_policy, spike_pools
from onnx_snn.graph.prepare import ai_onnx_opset, prepared_graph
from onnx_snn.graph.signed_sites import insert_signed_sites
from onnx_snn.graph.temporal import (
    GATED,
    PER_STEP,
    SUMMED,
    TIME_DIFFERENCE,
    behaviour_over_time,
)
from onnx_snn.io.metadata import TIMESTEPS, is_converted, metadata
from onnx_snn.io.models import ModelLike, load_model

OUTPUT_HEAD_NOTE = ("at the output: applied per step; averaging per-step probabilities is "
                    "biased, drop_output_softmax=True (--drop-softmax) averages the logits")


@dataclass
class Entry:
    """One node of interest: what happens to it and why."""

    node: str
    op: str
    action: str
    note: str = ""


@dataclass
class ModelInspection:
    """The result of ``inspect_model``; ``to_dict()`` is what ``--json`` writes."""

    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    ops: list[Entry] = field(default_factory=list)
    caveats: list[Entry] = field(default_factory=list)
    blocker: str | None = None  # why convert would stop, or None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spiking_inputs"] = [{**i, "shape": ["S", *i["shape"]]} for i in self.inputs] + [
            {"name": TIMESTEPS, "dtype": "int64", "shape": []}]
        data["spiking_outputs"] = [{**o, "shape": ["T", *o["shape"]]} for o in self.outputs]
        return data


def spiking_caveats(graph: gs.Graph, converted: Collection[str], maxpool: str = "keep",
                    keep_analog: bool = False) -> list[Entry]:
    """Layers that a spiking net computes only approximately, after converted neurons;
    ``maxpool`` is the MaxPool policy (its ``TEMPORAL_POLICIES`` pool spikes exactly).
    Other nonlinear ops are exact time-difference ops unless ``keep_analog``."""
    after = downstream(graph, [n for n in graph.nodes if n.name in converted])
    pools = spike_pools(graph)
    caveats = []
    for node in graph.nodes:
        if id(node) not in after:
            continue
        if keep_analog and is_output_head(node, graph):
            caveats.append(Entry(node.name, node.op, "keep", OUTPUT_HEAD_NOTE))
        elif node.op == "MaxPool" and maxpool not in TEMPORAL_POLICIES \
                and node.name in pools:
            caveats.append(Entry(node.name, node.op, "keep", "follows spiking neurons: the max "
                                 "over spikes over-counts; use maxpool='td', 'gated', "
                                 "'before' or 'avg'"))
        elif keep_analog and node.op == "LRN":
            caveats.append(Entry(node.name, node.op, "keep", "kept: LRN is not linear, so on "
                                 "spikes it only approximates the ANN"))
    return caveats


#: Notes on how an op runs once its inputs vary over time (``graph.temporal``).
_BEHAVIOUR_NOTES = {
    TIME_DIFFERENCE: "time-difference op: its mean output is exact at every t",
    PER_STEP: "runs step by step on spiking values: its output need not converge",
    SUMMED: "reads its scores summed over the steps so far",
    GATED: "passes the input with the highest running rate",
}


def inspect_graph(graph: gs.Graph, exclude: Collection[str] = (), keep_analog: bool = False,
                  sites: Collection[gs.Node] = (), maxpool: str = "keep"
                  ) -> tuple[list[Entry], list[str]]:
    """One entry per op of a prepared graph (with its signed ``sites``): ``neuron``,
    ``signed`` (a signed neuron), ``analog`` (runs once on the input, before any
    neuron), or how it runs on time-varying values (``graph.temporal``: ``linear``,
    ``td``, ``per-step``, ``summed``, ``gated``, ``shape``), ``keep`` for an excluded
    rectifier; and the names of the neurons to convert."""
    site_names = {site.name for site in sites}
    pools = spike_pools(graph)
    entries, converted = [], []
    varying: set[int] = set()
    for node in [n for n in graph.nodes if n.op != "Constant"]:
        cap = rectifier_cap(node)
        reads = [id(t) in varying and carries_values(t) for t in node.inputs]
        if cap is not None and node.name not in exclude or node.name in site_names:
            converted.append(node.name)
            note = "" if cap is None or math.isinf(cap) else f"scale capped at {cap:g}"
            action = "neuron" if cap is not None else "signed"
        elif not any(reads):
            action, note = "analog", "runs once on the input"
            if cap is not None:
                action, note = "keep", "excluded: stays analog, runs once on the input"
            entries.append(Entry(node.name, node.op, action, note))
            continue
        else:
            action = behaviour_over_time(node, reads, maxpool, not keep_analog, pools)
            note = _BEHAVIOUR_NOTES.get(action, "")
            if cap is not None:
                action, note = "keep", f"excluded: {action}, {note}".rstrip(", ")
        varying.update(id(t) for t in node.outputs)
        entries.append(Entry(node.name, node.op, action, note))
    return entries, converted


def _values(values: list[onnx.ValueInfoProto], skip: set[str]) -> list[dict[str, Any]]:
    described = []
    for value in values:
        if value.name in skip:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type \
            else "?"
        described.append({"name": value.name, "dtype": dtype, "shape": shape})
    return described


def conversion_graph(model: ModelLike, maxpool: str, drop_output_softmax: bool,
                     keep_analog: bool = False
                     ) -> tuple[gs.Graph, list[gs.Node], list[gs.Node]]:
    """The graph that is converted: the prepared ANN with the MaxPool policy applied,
    on request the output Softmax removed, and, unless ``keep_analog``, a signed site
    in front of each weighted layer that reads a value neither rectified nor from the
    input (``onnx_snn.graph.signed_sites``). Returns it with the removed Softmax nodes
    and the sites. Shared by ``convert`` and ``inspect_model``, so both see the same
    graph."""
    loaded = load_model(model)
    if is_converted(metadata(loaded)):
        raise OnnxSnnError(f"{_name(model)} is already a spiking model converted by onnx-snn; give "
                           "the ANN it came from")
    try:
        graph = prepared_graph(loaded)
    except OnnxSnnError as error:  # name the model
        raise OnnxSnnError(f"{_name(model)}: {error}") from error
    apply_maxpool_policy(graph, maxpool)
    dropped = drop_output_heads(graph) if drop_output_softmax else []
    sites = [] if keep_analog else insert_signed_sites(graph)
    return graph, dropped, sites


def _name(model: ModelLike) -> str:
    """How messages name ``model``: its path, or "the model"."""
    return str(model) if isinstance(model, (str, os.PathLike)) else "the model"


def inspect_model(model: ModelLike, *, exclude: Collection[str] = (), keep_analog: bool = False,
                  maxpool: str = "keep", drop_output_softmax: bool = False) -> ModelInspection:
    """What ``convert`` with these options would do, without calibrating anything."""
    graph, dropped, sites = conversion_graph(model, maxpool, drop_output_softmax, keep_analog)
    prepared = gs.export_onnx(graph)
    entries, converted = inspect_graph(graph, exclude, keep_analog, sites, maxpool)
    entries += [Entry(node.name, node.op, "drop", "at the output: removed on request")
                for node in dropped]
    initializers = {t.name for t in prepared.graph.initializer}
    try:
        check_activations(graph, keep_analog)
        check_convertible(graph, converted)
        blocker = None
    except OnnxSnnError as error:
        blocker = str(error)
    return ModelInspection(ai_onnx_opset(prepared),
                           _values(list(prepared.graph.input), initializers),
                           _values(list(prepared.graph.output), set()),
                           entries, spiking_caveats(graph, converted, maxpool, keep_analog),
                           blocker)
