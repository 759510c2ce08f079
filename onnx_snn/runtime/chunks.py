"""Runs cut to a memory budget (docs/chunked-execution.md): all T steps of a few
samples a call, or, when one sample's T steps do not fit, one sample in calls of a
few steps.

``plan_chunks`` picks the steps and samples per call from the bytes one sample-step
needs; ``ChunkedRun`` runs a model's chunked form (``onnx_snn.export.chunked``),
carrying the states from call to call. The outputs are those of one call on all T
steps, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.chunked import to_chunked
from onnx_snn.io.metadata import chunk_states, time_summed_outputs
from onnx_snn.io.models import ModelLike

#: How many bytes of onnxruntime's working memory one value of the largest neuron
#: layer stands for per sample-step (its input, its spikes, the layer after it and the
#: buffers the memory planner keeps): the growth of peak RSS per T·N row between two
#: unchunked runs was 7.7 bytes on ResNet-18 at 224x224 (T = 8 and 32 on 8 images)
#: and 11.7 on ResNet-20 at 32x32 (T = 16 and 64 on 64 images); largest layers
#: /2/Relu, 802,816 values, and /5/relu/Relu, 16,384 values (the nets of
#: benchmarks/memory_scaling.py, each run in a fresh process).
BYTES_PER_LARGEST_VALUE = 16
#: Bytes per neuron of the potentials a chunked call carries: the state fed in and
#: the one it gives back, float32 each (the time ops' sums are not counted).
BYTES_PER_CARRIED_VALUE = 8


@dataclass(frozen=True)
class ChunkPlan:
    """Steps and samples per call of a run of ``timesteps`` steps on ``samples`` samples."""

    timesteps: int
    samples: int
    steps: int
    batch: int

    @property
    def chunked(self) -> bool:
        return self.steps < self.timesteps or self.batch < self.samples

    def describe(self) -> str:
        def count(number: int, noun: str) -> str:
            return f"{number} {noun}{'s' if number != 1 else ''}"
        return (f"T = {self.timesteps} on {count(self.samples, 'sample')} runs as calls of "
                f"{count(self.steps, 'step')} x {count(self.batch, 'sample')}")


def plan_chunks(timesteps: int, samples: int, sample_step_bytes: int | None,
                state_bytes: int, budget: int | None) -> ChunkPlan:
    """The calls that fit ``budget`` bytes, ``sample_step_bytes`` being the working memory
    of one sample and one step and ``state_bytes`` the states one sample carries between
    calls of fewer than T steps:

    - everything in one call, when it fits;
    - else all T steps of as many samples as fit, per call (no states to carry);
    - else one sample at a time, in calls of as many steps as fit beside its states
      (fewer samples per call leave more memory for steps: the rows per call are
      what makes a call fast);
    - else an error. Without a budget or a size estimate, one call."""
    if budget is None or not sample_step_bytes:
        return ChunkPlan(timesteps, samples, timesteps, samples)
    whole = timesteps * sample_step_bytes
    if whole * samples <= budget:
        return ChunkPlan(timesteps, samples, timesteps, samples)
    if whole <= budget:
        return ChunkPlan(timesteps, samples, timesteps, int(budget // whole))
    steps = (budget - state_bytes) // sample_step_bytes
    if steps < 1:
        raise OnnxSnnError(
            f"one sample and one step need about {sample_step_bytes + state_bytes:,} bytes, "
            f"more than the memory budget of {budget:,} bytes: raise --memory-limit or "
            "free memory")
    return ChunkPlan(timesteps, samples, int(steps), 1)


class ChunkedRun:
    """A converted model's chunked form in onnxruntime; ``run`` carries the states.

    ``open_session(model)`` makes the onnxruntime session (native kernels or not),
    ``run_session(session, names, feed)`` runs it.
    """

    def __init__(self, model: ModelLike, open_session: Callable, run_session: Callable) -> None:
        self.session = open_session(to_chunked(model))
        self.run_session = run_session
        props = self.session.get_modelmeta().custom_metadata_map
        #: (state input, state output) pairs, fed back from call to call.
        self.states = [(state["input"], state["output"])
                       for state in chunk_states(props)]
        self.time_sums = set(time_summed_outputs(props))

    def run(self, names: list[str], feed: dict[str, np.ndarray], steps_name: str,
            timesteps: int, sequences: Collection[str], steps: int) -> list[np.ndarray]:
        """Outputs ``names`` of a run of ``timesteps`` steps on ``feed`` ([S, N, ...] for
        the inputs in ``sequences``, S = 1 or T; others as they are), ``steps`` a call."""
        state: dict[str, np.ndarray] = {}
        results: list[list[np.ndarray]] = []
        for start in range(0, timesteps, steps):
            count = min(steps, timesteps - start)
            call = {name: array[start:start + count]
                    if name in sequences and array.shape[0] == timesteps > 1 else array
                    for name, array in feed.items()}
            call[steps_name] = np.array(count, np.int64)
            outputs = self.run_session(self.session, names + [out for _, out in self.states],
                                       {**call, **state})
            state = {state_in: value for (state_in, _), value
                     in zip(self.states, outputs[len(names):])}
            results.append(outputs[:len(names)])
        return [(sum(values[1:], values[0]) if name in self.time_sums
                 else np.concatenate(values, axis=0))
                for name, values in zip(names, zip(*results))]
