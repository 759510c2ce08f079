"""Assembling the spiking model from a prepared ANN and the plan for its neurons:
the rewrite, the scale folding and the time folding, in that order."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from onnx_snn.graph.batch_axes import moved_batch_axes
from onnx_snn.graph.naming import NameScope
from onnx_snn.graph.patterns import PatternPass, compose
from onnx_snn.graph.pooling import spike_pools
from onnx_snn.graph.prepare import ai_onnx_opset
from onnx_snn.io.metadata import (
    ACCUMULATORS,
    DIFFERENCES,
    NEURONS,
    OUTPUT_SCALES,
    TD_OUTPUTS,
    TIMESTEPS,
    TIMESTEPS_KEY,
    VERSION_KEY,
    NeuronInfo,
    neurons_json,
)
from onnx_snn.ops.function_bodies import DOMAIN, DOMAIN_VERSION
from onnx_snn.ops.time_ops import is_time_op, time_op_function
from onnx_snn.snn.rewrite import NeuronPlan, ReluToNeuron
from onnx_snn.snn.scale_folding import FoldOutputScales
from onnx_snn.snn.time_folding import TimeFolding
from onnx_snn.version import __version__

#: Functions need IR version 8 or newer.
MIN_IR_VERSION = 8


def build_spiking_model(ann: onnx.ModelProto, layers: list[NeuronPlan],
                        fold_scales: bool = True, maxpool: str = "keep",
                        time_difference: bool = True) -> onnx.ModelProto:
    """Rewrite a prepared ANN: neurons in place of ``layers``' Relus, plus the time axis,
    the function bodies of the neurons and time ops, and the metadata
    (``onnx_snn.io.metadata``).

    ``fold_scales`` moves output scales into the next layers' weights
    (``onnx_snn.snn.scale_folding``); without it every ``<layer>__output_scaler`` stays.
    ``maxpool`` is the MaxPool policy (``onnx_snn.graph.pooling``): "td" and "gated"
    rewrite the MaxPools that spikes reach (``onnx_snn.snn.temporal_pooling``).
    ``time_difference`` makes every other op that is not affine in time-varying
    values a time-difference op (``onnx_snn.snn.time_difference``).
    No shape inference runs: the passes keep the shapes they know.
    """
    graph = gs.import_onnx(ann)
    moved = moved_batch_axes(ann, graph)
    scope = NameScope.of(graph)
    timesteps = gs.Variable(scope.name(TIMESTEPS), np.int64, [])
    graph.inputs.append(timesteps)
    # the ANN tensor each neuron stands for: a rectifier's output, or what a signed site
    # (an Identity the conversion added, so not in the user's ANN) reads
    activation = {node.name: node.inputs[0] if node.op == "Identity" else node.outputs[0]
                  for node in graph.nodes}
    replaced = [NeuronInfo(layer.node, "", activation[layer.node].name,
                           _values_per_sample(activation[layer.node])) for layer in layers]
    folded = {layer.node for layer in layers} if fold_scales else set()
    time_folding = TimeFolding(timesteps, scope, maxpool, time_difference, moved,
                               spike_pools(graph))
    graph = compose(PatternPass(ReluToNeuron(layers, timesteps, scope)),
                    FoldOutputScales(folded), time_folding)(graph)
    nodes = {node.name: node for node in graph.nodes}
    replaced = [dataclasses.replace(info, spikes=nodes[info.node].outputs[0].name)
                for info in replaced]
    opset = ai_onnx_opset(ann)
    snn = gs.export_onnx(graph)
    snn.ir_version = max(ann.ir_version, MIN_IR_VERSION)
    imported = {entry.domain for entry in snn.opset_import}
    defined = {(f.domain, f.name) for f in snn.functions}
    custom_ops = [(neuron.domain, neuron.domain_version, neuron.op_type, neuron.function)
                  for neuron in (layer.neuron for layer in layers)]
    custom_ops += [(DOMAIN, DOMAIN_VERSION, node.op_type,
                    functools.partial(time_op_function, node.op_type))
                   for node in snn.graph.node if is_time_op(node)]
    for domain, version, op_type, function in custom_ops:
        if domain not in imported:
            snn.opset_import.append(helper.make_opsetid(domain, version))
            imported.add(domain)
        if (domain, op_type) not in defined:
            snn.functions.append(function(opset))
            defined.add((domain, op_type))
    helper.set_model_props(snn, {VERSION_KEY: __version__,
                                 TIMESTEPS_KEY: timesteps.name,
                                 OUTPUT_SCALES: json.dumps({layer.node: np.asarray(
                                     layer.spike_value, np.float32).tolist() for layer in layers}),
                                 NEURONS: neurons_json(replaced),
                                 ACCUMULATORS: json.dumps(time_folding.accumulators),
                                 DIFFERENCES: json.dumps([name for name in
                                                          time_folding.differences
                                                          if name in nodes]),
                                 TD_OUTPUTS: json.dumps(time_folding.computed)})
    return snn


def _values_per_sample(tensor: gs.Tensor) -> int | None:
    """Elements per sample of a tensor [N, ...] whose other dims are static, else None."""
    dims = list(tensor.shape or [])[1:]
    if not tensor.shape or not all(isinstance(d, int) for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))
