"""What a conversion will do to a model, found before anything runs.

``inspect_model`` lists every activation (converted, kept or refused), every
layer with a caveat in a spiking net (MaxPool, LRN after neurons), and the
input and output shapes of the ANN and of the spiking model.
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

from onnx_snn.graph.activations import (
    UNCONVERTIBLE, downstream, drop_output_heads, is_output_head, rectifier_cap,
)
from onnx_snn.graph.convertibility import check_activations, check_convertible
from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.metadata import TIMESTEPS, is_converted, metadata
from onnx_snn.io.models import ModelLike, load_model
from onnx_snn.graph.pooling import TEMPORAL_POLICIES, apply_maxpool_policy
from onnx_snn.graph.prepare import ai_onnx_opset, prepared_graph


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
    activations: list[Entry] = field(default_factory=list)
    caveats: list[Entry] = field(default_factory=list)
    blocker: str | None = None  # why convert would stop, or None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spiking_inputs"] = [{**i, "shape": ["S", *i["shape"]]} for i in self.inputs] + [
            {"name": TIMESTEPS, "dtype": "int64", "shape": []}]
        data["spiking_outputs"] = [{**o, "shape": ["T", *o["shape"]]} for o in self.outputs]
        return data


def spiking_caveats(graph: gs.Graph, converted: Collection[str], maxpool: str = "keep"
                    ) -> list[Entry]:
    """Layers that a spiking net computes only approximately, after converted neurons;
    ``maxpool`` is the MaxPool policy (its ``TEMPORAL_POLICIES`` pool spikes exactly)."""
    after = downstream(graph, [n for n in graph.nodes if n.name in converted])
    caveats = []
    for node in graph.nodes:
        if id(node) not in after:
            continue
        if is_output_head(node, graph):
            caveats.append(Entry(node.name, node.op, "keep", OUTPUT_HEAD_NOTE))
        elif node.op == "MaxPool" and maxpool not in TEMPORAL_POLICIES \
                and not _feeds_a_neuron(node, converted):
            caveats.append(Entry(node.name, node.op, "keep", "follows spiking neurons: the max "
                                 "over spikes over-counts; use maxpool='td', 'gated', "
                                 "'before' or 'avg'"))
        elif node.op == "LRN":
            caveats.append(Entry(node.name, node.op, "keep", "kept: LRN is not linear, so on "
                                 "spikes it only approximates the ANN"))
    return caveats


def _feeds_a_neuron(pool: gs.Node, converted: Collection[str]) -> bool:
    """A MaxPool whose only reader becomes a neuron (``maxpool='before'`` put it there):
    it takes the max of potentials, not of spikes."""
    readers = pool.outputs[0].outputs if pool.outputs else []
    return len(readers) == 1 and readers[0].name in converted


def inspect_graph(graph: gs.Graph, exclude: Collection[str] = (), keep_analog: bool = False
                  ) -> tuple[list[Entry], list[str]]:
    """Activation entries of a prepared graph and the names of the rectifiers to convert."""
    entries, converted = [], []
    for node in graph.nodes:
        cap = rectifier_cap(node)
        if cap is not None:
            if node.name in exclude:
                entries.append(Entry(node.name, node.op, "keep", "excluded: stays analog"))
                continue
            converted.append(node.name)
            note = "" if math.isinf(cap) else f"scale capped at {cap:g}"
            entries.append(Entry(node.name, node.op, "convert", note))
        elif is_output_head(node, graph):
            entries.append(Entry(node.name, node.op, "keep", OUTPUT_HEAD_NOTE))
        elif node.op in UNCONVERTIBLE:
            entries.append(Entry(node.name, node.op, "keep" if keep_analog else "refuse",
                                 "stays analog: its output need not converge as T grows"
                                 if keep_analog else "no spiking equivalent"))
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


def conversion_graph(model: ModelLike, maxpool: str, drop_output_softmax: bool
                 ) -> tuple[gs.Graph, list[gs.Node]]:
    """The graph that is converted: the prepared ANN with the MaxPool policy applied
    and, on request, the output Softmax removed; also returns the removed Softmax
    nodes. Shared by ``convert`` and ``inspect_model``, so both see the same graph."""
    loaded = load_model(model)
    if is_converted(metadata(loaded)):
        name = model if isinstance(model, (str, os.PathLike)) else "the model"
        raise OnnxSnnError(f"{name} is already a spiking model converted by onnx-snn; give "
                           "the ANN it came from")
    graph = prepared_graph(loaded)
    apply_maxpool_policy(graph, maxpool)
    dropped = drop_output_heads(graph) if drop_output_softmax else []
    return graph, dropped


def inspect_model(model: ModelLike, *, exclude: Collection[str] = (), keep_analog: bool = False,
                  maxpool: str = "keep", drop_output_softmax: bool = False) -> ModelInspection:
    """What ``convert`` with these options would do, without calibrating anything."""
    graph, dropped = conversion_graph(model, maxpool, drop_output_softmax)
    prepared = gs.export_onnx(graph)
    entries, converted = inspect_graph(graph, exclude, keep_analog)
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
                           entries, spiking_caveats(graph, converted, maxpool), blocker)
