"""What a converted model says about itself, in its metadata.

The conversion writes, and every format keeps:

- ``TIMESTEPS_KEY``: the name of the int64 input T (``timesteps`` unless the
  ANN already uses that name); a streaming model has none;
- ``OUTPUT_SCALES``: JSON {neuron node: its output scale, what one spike stands
  for (the calibrated scale s, or s/B for a burst neuron), a number or one per
  channel}; the scales themselves are folded into later weights;
- ``NEURONS``: JSON list, in graph order, of {"node", "spikes", "activation",
  "features"}: the neuron node, its spike tensor (the same name in every
  format), the ANN tensor it replaces (the rectifier's output) and its values
  per sample per step (null when not static);
- ``ACCUMULATORS``: JSON list of the running sums and means over the steps
  (``RunningSum``, ``RunningMean`` of ``onnx_snn.ops.time_ops``; CumSum nodes in
  models converted before them): an ArgMax's scores, a temporal MaxPool's input,
  a time-difference op's inputs (a streaming model carries each as state);
- ``DIFFERENCES``: JSON list of the nodes that take differences along time
  (``Difference``, ``StepDifference``; before them, Sub nodes of a step's value
  and the previous step's, zeros at step 1): a streaming model carries the
  previous value as state;
- ``TD_OUTPUTS``: JSON list of the tensors the time-difference ops compute at each
  step (f of the running means; ``report`` prices each value as an analog
  operation);
- ``STREAMING_STATES`` (streaming format): JSON list of {"node", "input",
  "output"}, the state inputs and outputs to feed back from step to step;
- ``CHUNK_STATES`` (chunked format): JSON list of {"node", "input", "output"}, the
  state inputs and outputs to feed back from chunk to chunk;
- ``TIME_SUMS``: JSON list of outputs that hold sums over the steps of a run
  (spike counts); a streaming session adds them up over its steps.

Readers take these facts from here instead of guessing from the graph, so they
work the same on the onnx-snn, standard and streaming formats and on custom
neurons.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import onnx

from onnx_snn.errors import OnnxSnnError

VERSION_KEY = "onnx_snn.version"
TIMESTEPS_KEY = "onnx_snn.timesteps_input"
OUTPUT_SCALES = "onnx_snn.output_scales"
NEURONS = "onnx_snn.neurons"
ACCUMULATORS = "onnx_snn.accumulators"
DIFFERENCES = "onnx_snn.differences"
TD_OUTPUTS = "onnx_snn.td_outputs"
STREAMING_STATES = "onnx_snn.streaming_states"
CHUNK_STATES = "onnx_snn.chunk_states"
TIME_SUMS = "onnx_snn.time_sums"
#: The default name of the T input.
TIMESTEPS = "timesteps"


@dataclass(frozen=True)
class NeuronInfo:
    """One neuron layer of a converted model."""

    node: str
    spikes: str
    activation: str
    features: int | None


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def is_converted(props: Mapping[str, str]) -> bool:
    """True for the metadata of a model that onnx_snn converted."""
    return VERSION_KEY in props


def neurons(props: Mapping[str, str], where: str = "the model") -> list[NeuronInfo]:
    """The neuron layers listed in a converted model's metadata."""
    if not is_converted(props):
        raise OnnxSnnError(f"{where} is not a converted model: it has no onnx-snn metadata "
                           f"('{VERSION_KEY}')")
    if NEURONS not in props:
        raise OnnxSnnError(f"{where} lists no neurons in its metadata ('{NEURONS}'): it was "
                           "not converted by this version of onnx-snn; convert it again")
    try:
        return [NeuronInfo(**entry) for entry in json.loads(props[NEURONS])]
    except (ValueError, TypeError) as error:
        raise OnnxSnnError(f"{where}: metadata '{NEURONS}' is damaged ({error})") from error


def neurons_json(layers: list[NeuronInfo]) -> str:
    return json.dumps([asdict(layer) for layer in layers])


def time_summed_outputs(props: Mapping[str, str]) -> list[str]:
    """The outputs of a model that hold sums over the steps of a run."""
    return json.loads(props.get(TIME_SUMS, "[]"))


def listed(props: Mapping[str, str], key: str) -> list[str] | None:
    """The names a list key (``ACCUMULATORS``, ``DIFFERENCES``, ``TD_OUTPUTS``, ``TIME_SUMS``)
    holds; None when the model does not have the key."""
    return json.loads(props[key]) if key in props else None


def output_scales(props: Mapping[str, str]) -> dict[str, float | list[float]]:
    """Each neuron node's output scale, what one spike stands for (``OUTPUT_SCALES``)."""
    return json.loads(props[OUTPUT_SCALES])


def streaming_states(props: Mapping[str, str]) -> list[dict[str, str]]:
    """The state pairs {"node", "input", "output"} of a streaming model, fed back from
    step to step."""
    return json.loads(props[STREAMING_STATES])


def chunk_states(props: Mapping[str, str]) -> list[dict[str, str]]:
    """The state pairs {"node", "input", "output"} of a model in the chunked form (or the
    standard format), fed back from call to call; none for other models."""
    return json.loads(props.get(CHUNK_STATES, "[]"))


def counts_over_time(props: Mapping[str, str]) -> bool:
    """True for a model that counts its steps or sums over them: time ops (running sums
    and means, differences) or spike-count outputs."""
    return any(json.loads(props.get(key, "[]")) for key in (ACCUMULATORS, DIFFERENCES,
                                                              TIME_SUMS))


def timesteps_input(props: Mapping[str, str]) -> str | None:
    """The name of a converted model's T input (None for a streaming model)."""
    return props.get(TIMESTEPS_KEY)
