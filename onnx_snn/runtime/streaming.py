"""Running a streaming-format model (``onnx_snn.export.formats``) one frame at a time.

``StreamingSession.step`` feeds one frame and carries the neurons' membrane
potentials to the next call; ``reset`` goes back to the initial potentials.
``run`` takes what ``SpikingSession.run`` takes and steps T times, so a
streaming model gives the same outputs as the onnx-snn model it came from.
``open_session`` picks the session class that fits a model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.metadata import STREAMING_STATES, streaming_states
from onnx_snn.io.models import ModelLike
from onnx_snn.ops.time_ops import MAX_COUNTED_STEPS
from onnx_snn.runtime.memory import memory_budget
from onnx_snn.runtime.sessions import SpikingOutput, SpikingSession, create_session

Inputs = np.ndarray | Mapping[str, np.ndarray]


def open_session(model: ModelLike, native: bool = True,
                 memory_limit: str | int | None = None) -> SpikingSession:
    """A ``StreamingSession`` for a streaming model, a ``SpikingSession`` otherwise
    (which runs in chunks when a run exceeds ``memory_limit``)."""
    session = create_session(model, native)
    if STREAMING_STATES in session.get_modelmeta().custom_metadata_map:
        return StreamingSession(session, memory_limit=memory_limit)
    return SpikingSession(session, native, memory_limit, source=model)


class StreamingSession(SpikingSession):
    """A streaming model in onnxruntime, with its membrane state kept between steps.

    It is a ``SpikingSession`` (``run`` takes the same arguments and gives the
    same outputs), so evaluation helpers accept it.
    """

    def __init__(self, model: ModelLike | ort.InferenceSession, native: bool = True,
                 memory_limit: str | int | None = None) -> None:
        self.session = model if isinstance(model, ort.InferenceSession) \
            else create_session(model, native)
        self.memory_limit = memory_limit  # for the outputs kept over T: one step at a time
        metadata = self.session.get_modelmeta().custom_metadata_map
        if STREAMING_STATES not in metadata:
            raise OnnxSnnError(f"not a streaming model: no '{STREAMING_STATES}' metadata "
                               "(export it with format 'streaming')")
        #: (state input, state output) name pairs, one per neuron layer.
        self.states = [(state["input"], state["output"])
                       for state in streaming_states(metadata)]
        self._describe(hidden_inputs={i for i, _ in self.states},
                       hidden_outputs={o for _, o in self.states})
        self._state: dict[str, np.ndarray] = {}
        self._steps = 0  # since the last reset

    def reset(self) -> None:
        """Back to the initial membrane potentials (the model's defaults)."""
        self._state = {}
        self._steps = 0

    def step(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Run one step on one frame and keep the new state.

        ``inputs``: an array for single-input models, or ``{name: array}``;
        each frame is [N, ...] or [1, N, ...]. Returns every output by name, as
        the model gives it: [1, N, ...] (spike counts: [N], this step's).
        """
        feed = inputs if isinstance(inputs, Mapping) else self._single(inputs)
        framed = all(np.ndim(feed.get(s.name)) == len(s.shape) for s in self.sequence_specs)
        frames, _ = self._frames(feed, 1, sequence=framed)
        return self._advance(frames)

    def run(self, inputs: Inputs, timesteps: int | None = None,
            sequence: bool = False) -> SpikingOutput:
        """Reset, then step ``timesteps`` times; outputs stacked to [T, N, ...].

        Inputs as for ``SpikingSession.run``: direct encoding, each array one
        batch [N, ...] shown at every step; or ``sequence=True``, each array
        [T, N, ...] (or [1, N, ...]), one frame per step. Spike counts are
        summed over the steps, as the onnx-snn format counts them.
        """
        feed, timesteps = self._frames(inputs, timesteps, sequence)
        self._check_outputs_fit(timesteps, self._samples(feed),
                                memory_budget(self.memory_limit))
        self.reset()
        batched = {spec.name for spec in self.batch_specs if spec.batched}
        steps = [self._advance({name: array[min(t, len(array) - 1)][None]
                                if name in batched else array  # a constant input
                                for name, array in feed.items()})
                 for t in range(timesteps)]
        return SpikingOutput({
            name: (np.sum if name in self.time_sums else np.concatenate)(
                [outputs[name] for outputs in steps], axis=0)
            for name in self.output_names})

    def _frames(self, inputs: Inputs, timesteps: int | None,
                sequence: bool) -> tuple[dict[str, np.ndarray], int]:
        """``SpikingSession._inputs``, with one frame or one per step."""
        feed, timesteps = self._inputs(inputs, timesteps, sequence)
        frames = next(iter(feed.values())).shape[0]
        if frames not in (1, timesteps):
            raise OnnxSnnError(f"a sequence of {frames} frames cannot run for {timesteps} "
                               "steps: give one frame or one per step")
        return feed, timesteps

    def _advance(self, frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one step from the current state; returns the outputs, keeps the new state.
        A model that counts steps refuses a step beyond ``MAX_COUNTED_STEPS``."""
        if self.counts_over_time and self._steps >= MAX_COUNTED_STEPS:
            raise OnnxSnnError(f"step {self._steps + 1:,}: the model counts its steps or sums "
                               "over them in float32, exact up to "
                               f"{MAX_COUNTED_STEPS:,} steps; reset() the session")
        self._steps += 1
        results = self._run(self.output_names + [output for _, output in self.states],
                            {**frames, **self._state})
        count = len(self.output_names)
        self._state = {state_in: value
                       for (state_in, _), value in zip(self.states, results[count:])}
        return dict(zip(self.output_names, results[:count]))
