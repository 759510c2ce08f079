"""Light bias calibration: forward passes only, no retraining.

Layer by layer, in graph order, the per-channel mean of the SNN layer's output
(firing rate × scale, measured in onnxruntime over the calibration data at T
steps, with earlier layers already corrected) is compared with the ANN's mean
activation, clipped at the layer's scale since a rate cannot exceed 1. The
difference is added to the bias feeding the neuron (as a per-channel shift
before the input scaler). Li, Deng, Dong, Gu, "A free lunch from ANN: towards
efficient, accurate spiking neural networks calibration", ICML 2021 (the
"light" variant, bias only).
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from tqdm.auto import tqdm

from onnx_snn.calibration.collectors import Collector, channel_layout
from onnx_snn.calibration.driver import calibrate
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.builder import GraphBuilder
from onnx_snn.graph.layout import per_channel_shape
from onnx_snn.io.data import input_specs
from onnx_snn.io.metadata import TIME_SUMS, metadata
from onnx_snn.runtime.cluster import Cluster, map_batches
from onnx_snn.runtime.sessions import SpikingSession
from onnx_snn.snn.rewrite import NeuronPlan
from onnx_snn.validation import check_positive_int


class ChannelMeanHook(Collector):
    """Mean of an activation per channel over all calibration data, optionally
    clipped at ``ceiling`` (a scalar or one value per channel) first. ``layout`` is
    the activation's (channel axis, rank), or found from the graph
    (``onnx_snn.calibration.collectors.channel_layout``)."""

    splits = True  # exact float64 sums and counts add up over a batch's parts
    working_bytes = 12  # the clipped values and their float64 copy

    def __init__(self, ceiling: float | np.ndarray | None = None,
                 layout: tuple[int, int] | None = None) -> None:
        super().__init__("channel-mean", None)
        self.ceiling = ceiling
        self.sums: np.ndarray | None = None
        self.count = 0
        self.layout = layout

    def graph_outputs(self, graph: gs.Graph, activation: gs.Variable) -> list[gs.Variable]:
        if self.layout is None:
            self.layout = channel_layout(activation)
        axis, rank = self.layout
        make = GraphBuilder(graph, f"{activation.name}__mean_")
        values = activation
        if self.ceiling is not None:
            ceiling = np.asarray(self.ceiling, dtype=np.float32)
            if ceiling.ndim:
                ceiling = ceiling.reshape(per_channel_shape(ceiling.size, axis, rank))
            values = make("Min", [activation, make.const(ceiling, np.float32)], np.float32)
        # float64 sums of float32 values are exact here, so they do not depend on how a
        # run is cut into calls (onnx_snn.runtime.chunks) nor on the summation order
        values = make("Cast", [values], np.float64, {"to": onnx.TensorProto.DOUBLE})
        sums = make.reduce("ReduceSum", values, [a for a in range(rank) if a != axis],
                           np.float64)
        channels = make("Gather", [make("Shape", [activation], np.int64), make.const(axis)],
                        np.int64, {"axis": 0})
        return [sums, make("Div", [make("Size", [activation], np.int64), channels], np.int64)]

    def observe(self, fetched: list[np.ndarray]) -> None:
        """Add the sums per channel and the count of values per channel of a batch."""
        self.observe_part(fetched)
        self.batch_done()

    def observe_part(self, fetched: list[np.ndarray]) -> None:
        sums, count = np.asarray(fetched[0], dtype=np.float64), fetched[1]
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += int(count)
        self.scale = self.sums / self.count  # the per-channel mean so far

    def batch_done(self) -> None:
        self.batches += 1


def ann_channel_means(ann: onnx.ModelProto, data: Any, layers: list[NeuronPlan],
                      batch_size: int, progress: bool,
                      cluster: Cluster | None = None) -> dict[str, ChannelMeanHook]:
    """Per layer, the per-channel mean of its ANN activation, clipped at its scale
    (``scale``), and its layout in the ANN (``layout``)."""
    hooks = {layer.node: ChannelMeanHook(layer.scale) for layer in layers}
    calibrate(ann, data, hooks, batch_size=batch_size, progress=progress, cluster=cluster)
    return hooks


class LayerSumsWorker:
    """Per batch: a ``ChannelMeanHook``'s reductions of the SNN layer ``model`` outputs
    (``names``: sums and counts, which add up over the chunks of a run that does not
    fit in memory at once), the batch run for ``timesteps`` steps."""

    def __init__(self, model: onnx.ModelProto, names: list[str], timesteps: int,
                 layer: str) -> None:
        summed = onnx.ModelProto()
        summed.CopyFrom(model)
        onnx.helper.set_model_props(summed, {**metadata(model), TIME_SUMS: json.dumps(names)})
        self.session = SpikingSession(summed)
        self.names, self.layer, self.timesteps = names, layer, timesteps

    def __call__(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(batch.values())))
        try:  # the session sums over chunks of steps; the samples are added up here
            part = self.session.plan(self.timesteps, rows).batch
            parts = [batch] if part >= rows else [
                {name: array[first:first + part] for name, array in batch.items()}
                for first in range(0, rows, part)]
            runs = [self.session.run(feed, self.timesteps) for feed in parts]
        except OnnxSnnError as error:
            raise OnnxSnnError(f"layer '{self.layer}': {error}") from error
        return [sum(run.outputs[name] for run in runs) for name in self.names]


def snn_channel_means(snn: onnx.ModelProto, data: Any, specs, layer: NeuronPlan,
                      timesteps: int, batch_size: int, layout: tuple[int, int],
                      cluster: Cluster | None = None) -> np.ndarray:
    """Per-channel mean of one SNN layer's output (rate × scale) over data and T steps,
    with the (channel axis, rank) ``layout`` found in the ANN (time folding can hide
    shapes)."""
    graph = gs.import_onnx(snn)
    neuron = next(n for n in graph.nodes if n.name == layer.node)
    output = next(c for c in neuron.outputs[0].outputs if c.op == "Mul").outputs[0]  # × scale
    hook = ChannelMeanHook(layout=layout)
    graph.outputs = hook.graph_outputs(graph, output)
    graph.cleanup()
    model = gs.export_onnx(graph)
    model.metadata_props.extend(snn.metadata_props)
    recipe = partial(LayerSumsWorker, model, [t.name for t in graph.outputs], timesteps,
                     layer.node)
    for fetched in map_batches(recipe, data, specs, batch_size, cluster):
        hook.observe(fetched)
    return hook.scale


def check_bias_steps(timesteps: Any) -> int:
    """The number of steps bias calibration runs, a positive int."""
    return check_positive_int(timesteps, "bias calibration", "a positive number of time steps")


def calibrate_biases(ann: onnx.ModelProto, layers: list[NeuronPlan], data: Any,
                     timesteps: int, build, batch_size: int = 100,
                     progress: bool = True, cluster: Cluster | None = None
                     ) -> list[NeuronPlan]:
    """``layers`` with per-channel bias shifts, corrected one layer at a time.

    ``build(ann, layers)`` makes the spiking model, with its output scalers kept
    (``convert.build_spiking_model`` with ``fold_scales=False``). With ``cluster``
    each layer's pass runs on its Ray workers (the same sums, in batch order).
    """
    timesteps = check_bias_steps(timesteps)
    targets = ann_channel_means(ann, data, layers, batch_size, progress, cluster)
    specs = input_specs(ann)
    corrected = list(layers)
    for index in tqdm(range(len(layers)), desc="bias calibration", unit="layer",
                      disable=None if progress else True, leave=False):
        layer = corrected[index]
        target = targets[layer.node]
        achieved = snn_channel_means(build(ann, corrected), data, specs, layer, timesteps,
                                     batch_size, target.layout, cluster)
        shift = target.scale - achieved
        if layer.bias_shift is not None:
            shift = shift + layer.bias_shift
        corrected[index] = dataclasses.replace(layer, bias_shift=shift.astype(np.float32))
    return corrected
