"""Running converted models in onnxruntime.

``session_options()`` registers the project's native kernel library
(``onnx_snn.ops.native``) when it loads; otherwise onnxruntime runs the IFNode
function body, which gives the same spikes. ``SpikingSession`` feeds inputs and
time steps and returns per-step outputs; ``run_snn`` is the one-call version.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from onnx_snn.errors import OnnxSnnError, first_line
from onnx_snn.graph.prepare import replace_zipmaps
from onnx_snn.io.data import InputSpec, input_specs, validate_batch
from onnx_snn.io.metadata import (
    NEURONS,
    TIMESTEPS,
    chunk_states,
    counts_over_time,
    neurons,
    time_summed_outputs,
    timesteps_input,
)
from onnx_snn.io.models import ModelLike, load_model
from onnx_snn.ops.native import register_native
from onnx_snn.ops.time_ops import MAX_COUNTED_STEPS
from onnx_snn.runtime.chunks import (
    BYTES_PER_CARRIED_VALUE,
    BYTES_PER_LARGEST_VALUE,
    ChunkedRun,
    ChunkPlan,
    plan_chunks,
)
from onnx_snn.runtime.memory import announce, memory_budget
from onnx_snn.runtime.predictions import SpikingOutput
from onnx_snn.validation import check_bool, check_positive_int

#: numpy dtypes of onnxruntime's input type strings.
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


#: onnxruntime's threads per session in this process (None: onnxruntime's default).
_threads: int | None = None


def limit_threads(threads: int) -> None:
    """Give every session this process opens from now on ``threads`` threads (a Ray
    worker's share of the cores, ``onnx_snn.runtime.cluster``)."""
    global _threads
    _threads = check_positive_int(threads, "threads")


def session_options(native: bool = True) -> ort.SessionOptions:
    """Session options with the native kernels registered (``native``) when they load,
    and without onnxruntime's CPU memory arena: the arena grows in powers of two and
    keeps what it took, which nearly doubled the peak memory of a ResNet-18 run at
    224x224 (2.4 GB against 1.3 GB for the same 8 steps x 19 images)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: errors come back as OnnxSnnErrors
    options.enable_cpu_mem_arena = False
    if _threads is not None:
        options.intra_op_num_threads = _threads
    if native:
        register_native(options)
    return options


def create_session(model: ModelLike, native: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session for a model (path or ModelProto).

    A path goes to onnxruntime as it is (external data included); only when
    loading fails is the file read in Python, to name what is wrong with it.
    """
    is_path = isinstance(model, (str, os.PathLike))
    source = str(model) if is_path else load_model(model).SerializeToString()
    try:
        return ort.InferenceSession(source, session_options(native),
                                    providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        if is_path:
            load_model(model)  # a missing, corrupt or non-ONNX file: its own clear error
        raise OnnxSnnError(f"onnxruntime cannot load the model: "
                           f"{first_line(error)}") from error


def _output_types(values: list[Any], time_axis: bool) -> dict[str, tuple[np.dtype | None, tuple]]:
    """onnxruntime's output descriptions as (dtype, per-sample shape with N first);
    ``time_axis`` drops the leading T of a converted model's outputs."""
    return {value.name: (np.dtype(_ORT_DTYPES[value.type]) if value.type in _ORT_DTYPES
                         else None,
                         tuple(d if isinstance(d, int) else None
                               for d in value.shape[int(time_axis):]))
            for value in values}


def run_checked(session: ort.InferenceSession, names: list[str] | None,
                feed: dict[str, np.ndarray], where: str = "") -> list[np.ndarray]:
    """``session.run``, with onnxruntime's errors as one-line OnnxSnnErrors."""
    try:
        return session.run(names, feed)
    except Exception as error:  # onnxruntime raises its own exception types
        place = f" on {where}" if where else ""
        raise OnnxSnnError(f"onnxruntime failed{place}: "
                           f"{first_line(error)}") from error


class AnnSession:
    """The original ANN in onnxruntime, fed batches checked against its inputs.

    A ZipMap output (scikit-learn converters) gives its probability tensor, as in
    the converted model. When the inputs fix the batch size B (an exporter's batch
    1), a batch of any size runs in chunks of B rows: a short last chunk is padded
    with copies of its last row and the padding dropped, and the outputs are put
    back together along each output's batch axis (the first axis of size B in its
    declared shape, else axis 0).
    """

    def __init__(self, model: ModelLike, outputs: list[str] | None = None) -> None:
        ann = replace_zipmaps(load_model(model))
        self.specs = input_specs(ann)
        self.outputs = outputs
        self.session = create_session(ann, native=False)
        self.output_types = _output_types(self.session.get_outputs(), time_axis=False)
        fixed = {spec.shape[0] for spec in self.specs  # -1 (some exporters) is no size
                 if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0}
        self.fixed_batch = fixed.pop() if len(fixed) == 1 else None
        #: Each output's batch axis, by name.
        self.batch_axes = {o.name: next((k for k, dim in enumerate(o.shape or [])
                                         if dim == self.fixed_batch), 0)
                           for o in self.session.get_outputs()}

    def run(self, batch: Any, where: str = "batch") -> list[np.ndarray]:
        """The requested outputs (all by default) for one batch."""
        feed = validate_batch(batch, self.specs, where)
        size = self.fixed_batch
        if size is None:
            return run_checked(self.session, self.outputs, feed, where)
        rows = len(next(iter(feed.values())))
        axes = [self.batch_axes.get(name, 0) for name in self.outputs or self.batch_axes]
        parts = []
        batched = {spec.name for spec in self.specs if spec.batched}  # not constant inputs
        for begin in range(0, rows, size):
            chunk = {name: array[begin:begin + size] if name in batched else array
                     for name, array in feed.items()}
            pad = size - min(size, rows - begin)
            if pad:  # copies of the last row: values the model takes
                chunk = {name: np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])
                         if name in batched else array for name, array in chunk.items()}
            results = run_checked(self.session, self.outputs, chunk,
                                  f"{where} (rows {begin}-{begin + size - pad - 1} of the "
                                  f"ANN's fixed batch {size})")
            # a declared shape can lie (ddddocr's [1, seqlen] for [seq, 1, C]): the axis
            # of size B in what the model gives
            axes = [axis if value.ndim > axis and value.shape[axis] == size else
                    next((k for k, dim in enumerate(value.shape) if dim == size), axis)
                    for value, axis in zip(results, axes)]
            parts.append([np.take(value, range(size - pad), axis=axis)
                          if pad and value.ndim > axis and value.shape[axis] == size else value
                          for value, axis in zip(results, axes)])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(values, axis=axis) if values[0].ndim > axis else values[0]
                for values, axis in zip(zip(*parts), axes)]


class SpikingSession:
    """A converted model loaded in onnxruntime, run for a chosen number of steps.

    A run that would need more memory than ``memory_limit`` (a size such as
    ``"2GB"``; default: a share of what the machine, cgroup and process limits
    leave, ``onnx_snn.runtime.memory``) runs in chunks of steps, or of samples,
    with the same outputs bit for bit (``onnx_snn.runtime.chunks``). That needs
    the model itself: given only an ``InferenceSession``, pass it as ``source``.
    """

    def __init__(self, model: ModelLike | ort.InferenceSession, native: bool = True,
                 memory_limit: str | int | None = None,
                 source: ModelLike | None = None) -> None:
        is_session = isinstance(model, ort.InferenceSession)
        check_bool(native, "native")
        self.session = model if is_session else create_session(model, native)
        self.source = source if is_session else model
        self.native = native
        self.memory_limit = memory_limit
        self._chunked: ChunkedRun | None = None
        #: The plan of the latest run (``ChunkPlan``), for ``--verbose``.
        self.last_plan: ChunkPlan | None = None
        props = self.session.get_modelmeta().custom_metadata_map
        names = [i.name for i in self.session.get_inputs()]
        self.timesteps_name = timesteps_input(props) or TIMESTEPS
        if self.timesteps_name not in names:
            raise OnnxSnnError(f"not a converted model: it has no '{self.timesteps_name}' input")
        states = chunk_states(props)
        self._describe(hidden_inputs={self.timesteps_name, *(s["input"] for s in states)},
                       hidden_outputs={state["output"] for state in states})

    def _describe(self, hidden_inputs: set[str], hidden_outputs: set[str]) -> None:
        """The inputs and outputs ``run`` deals in: all but those it handles itself,
        and the largest layer (values per sample per step), for the memory check."""
        props = self.session.get_modelmeta().custom_metadata_map
        known = [(layer.features, layer.node) for layer in neurons(props)
                 if layer.features] if NEURONS in props else []
        #: (values per sample per step, node) of the largest neuron layer, or None.
        self.largest_layer = max(known, default=None)
        #: Neurons per sample: the potentials a run in chunks of steps carries.
        self.carried_values = sum(features for features, _ in known)
        #: Outputs that hold sums over the steps (spike counts), not one value per step.
        self.time_sums = set(time_summed_outputs(props))
        self.counts_over_time = counts_over_time(props)  # T <= MAX_COUNTED_STEPS
        #: Each input as given to ``run`` in a sequence: [T, N, ...]; a constant input
        #: (no batch axis, declared without the leading S) as it is, at every step.
        self.sequence_specs = [
            InputSpec(i.name, np.dtype(_ORT_DTYPES.get(i.type, np.float32)),
                      (None, *(d if isinstance(d, int) else None for d in i.shape[1:]))
                      if _batched(i.shape) else
                      tuple(d if isinstance(d, int) else None for d in i.shape),
                      batched=_batched(i.shape))
            for i in self.session.get_inputs() if i.name not in hidden_inputs]
        #: Each input as one batch, shown at every step: [N, ...] (a constant input as is).
        self.batch_specs = [InputSpec(s.name, s.dtype, s.shape[1:] if s.batched else s.shape,
                                      s.batched) for s in self.sequence_specs]
        self.input_names = [spec.name for spec in self.sequence_specs]
        #: The inputs with a batch axis (the others are constants, given whole to each call).
        self.batched_inputs = {spec.name for spec in self.sequence_specs if spec.batched}
        self.output_names = [o.name for o in self.session.get_outputs()
                             if o.name not in hidden_outputs]
        self.output_types = _output_types(
            [o for o in self.session.get_outputs() if o.name in self.output_names],
            time_axis=True)

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray], timesteps: int | None = None,
            sequence: bool = False) -> SpikingOutput:
        """Run for ``timesteps`` steps.

        ``inputs``: an array for single-input models, or ``{name: array}``.
        Direct encoding (default): each array is one batch [N, ...], presented
        at every step. ``sequence=True``: each array is [T, N, ...], one slice
        per step, and ``timesteps`` defaults to T.
        """
        feed, timesteps = self._inputs(inputs, timesteps, sequence)
        rows = self._samples(feed)
        plan = self.plan(timesteps, rows)
        parts = [self._run_steps({name: array[:, first:first + plan.batch]
                                  if name in self.batched_inputs else array
                                  for name, array in feed.items()}, timesteps, plan.steps)
                 for first in range(0, rows, plan.batch)]
        outputs = parts[0] if len(parts) == 1 else [
            np.concatenate([part[i] for part in parts], axis=0 if name in self.time_sums else 1)
            for i, name in enumerate(self.output_names)]
        return SpikingOutput(dict(zip(self.output_names, outputs)))

    def _run_steps(self, feed: dict[str, np.ndarray], timesteps: int,
                   steps: int) -> list[np.ndarray]:
        """All outputs of one batch over ``timesteps`` steps, in calls of ``steps`` steps."""
        if steps >= timesteps:
            return self._run(self.output_names,
                             {**feed, self.timesteps_name: np.array(timesteps, np.int64)})
        return self._chunks().run(self.output_names, feed, self.timesteps_name, timesteps,
                                  self.batched_inputs, steps)

    @property
    def step_bytes(self) -> int | None:
        """The memory one sample and one step take, estimated from the largest neuron
        layer (None when the model does not say)."""
        return self.largest_layer[0] * BYTES_PER_LARGEST_VALUE if self.largest_layer else None

    def plan(self, timesteps: int, rows: int = 1) -> ChunkPlan:
        """How a run of ``timesteps`` steps on ``rows`` samples is cut to fit the memory
        budget; an error when one sample and one step do not fit, or when the run
        needs chunks of steps and the session has no model to build them from."""
        budget = memory_budget(self.memory_limit)
        self._check_outputs_fit(timesteps, rows, budget)
        if budget is not None:  # the outputs of every step stay in memory
            budget -= self.output_bytes(timesteps, rows)
        plan = plan_chunks(timesteps, rows, self.step_bytes,
                           self.carried_values * BYTES_PER_CARRIED_VALUE, budget)
        if plan.steps < timesteps and self.source is None:
            raise OnnxSnnError(
                f"T = {timesteps} needs more memory than the budget of {budget:,} bytes even "
                "for one sample, and this session was opened without its model, so it "
                "cannot run in chunks of steps")
        if plan.chunked:
            announce(plan.describe())
        self.last_plan = plan
        return plan

    def _chunks(self) -> ChunkedRun:
        if self._chunked is None:
            self._chunked = ChunkedRun(self.source, lambda model: create_session(
                model, self.native), run_checked)
        return self._chunked

    def _inputs(self, inputs: np.ndarray | Mapping[str, np.ndarray], timesteps: int | None,
                sequence: bool) -> tuple[dict[str, np.ndarray], int]:
        """The checked inputs as arrays [S, N, ...] by name, and the number of steps."""
        feed = dict(inputs) if isinstance(inputs, Mapping) else self._single(inputs)
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise OnnxSnnError(f"missing input {', '.join(map(repr, missing))}")
        if sequence:
            feed = validate_batch(feed, self.sequence_specs, where="sequence")
            if timesteps is None:
                timesteps = next(iter(feed.values())).shape[0]
        else:
            feed = {name: array[None] if name in self.batched_inputs else array for name, array
                    in validate_batch(feed, self.batch_specs, where="batch").items()}
        if timesteps is None:
            raise OnnxSnnError("give the number of time steps")
        return feed, check_timesteps(timesteps, self.counts_over_time)

    def _samples(self, feed: Mapping[str, np.ndarray]) -> int:
        """The batch size of checked inputs [S, N, ...] (1 with constant inputs only)."""
        batched = [feed[name] for name in self.input_names if name in self.batched_inputs]
        return batched[0].shape[1] if batched else 1

    def output_bytes(self, timesteps: int, rows: int) -> int:
        """The bytes of a run's outputs: every step's, and the sums over the steps once
        (float32; unknown sizes count as 1)."""
        def values(summed: bool) -> int:
            return sum(int(np.prod([d or 1 for d in shape[1:]], dtype=np.float64))
                       for name, (_, shape) in self.output_types.items()
                       if (name in self.time_sums) == summed)
        return (timesteps * values(summed=False) + values(summed=True)) * rows * 4

    def _check_outputs_fit(self, timesteps: int, rows: int, budget: int | None) -> None:
        """Refuse a run whose outputs alone, kept for every step, exceed ``budget`` bytes."""
        needed = self.output_bytes(timesteps, rows)
        if budget is not None and needed > budget:
            raise OnnxSnnError(
                f"T = {timesteps} keeps {needed:,} bytes of outputs for {rows} samples (every "
                f"step's), more than the memory budget of {budget:,} bytes: use a smaller T "
                "or batch size, or raise --memory-limit")

    def _run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return run_checked(self.session, names, feed)

    def _single(self, inputs: Any) -> dict[str, Any]:
        if len(self.input_names) != 1:
            raise OnnxSnnError(f"the model has inputs {', '.join(self.input_names)}; "
                               "pass a dict")
        return {self.input_names[0]: inputs}


def _batched(shape: list) -> bool:
    """Whether a converted model's input (declared ``shape``) carries samples, [S, N, ...]
    (S is 1 in the streaming format); an input without a batch axis in the ANN keeps
    its shape (``onnx_snn.snn.time_folding``)."""
    return len(shape) >= 2 and shape[0] in ("S", 1)


def check_timesteps(timesteps: Any, counted: bool = False) -> int:
    """The number of time steps as a positive int, at most ``MAX_COUNTED_STEPS`` for a
    model that counts steps or sums over them (``counted``); errors otherwise."""
    steps = check_positive_int(timesteps, "time steps")
    if counted and steps > MAX_COUNTED_STEPS:
        raise OnnxSnnError(f"T = {steps:,}: the model counts its steps or sums over them "
                           "(time ops or spike counts) in float32, exact up to T = "
                           f"{MAX_COUNTED_STEPS:,}; use a smaller T")
    return steps


def check_timesteps_list(timesteps: Any) -> list[int]:
    """One T or several (any iterable of them) as a sorted list without repeats."""
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        timesteps = [timesteps]
    steps = sorted({check_timesteps(t) for t in timesteps})
    if not steps:
        raise OnnxSnnError("give at least one number of time steps")
    return steps


def run_snn(model: ModelLike | SpikingSession, inputs: np.ndarray | Mapping[str, np.ndarray],
            timesteps: int) -> tuple[np.ndarray, np.ndarray]:
    """Run one batch (direct encoding) for ``timesteps`` steps.

    Returns ``(per_step, mean)``: the first output per step [T, N, ...] and its
    average over time [N, ...].
    """
    session = model if isinstance(model, SpikingSession) else SpikingSession(model)
    result = session.run(inputs, timesteps)
    return result.per_step, result.mean
