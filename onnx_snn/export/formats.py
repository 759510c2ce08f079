"""Other forms of a converted model: plain ONNX, and one step at a time.

``convert`` writes the onnx-snn format: neurons are ``IFNode`` ops of the
``onnx_snn`` domain, defined by a model-local function. Two exports rewrite
it, both with the dynamics of ``onnx_snn.ops.dynamics.if_step``, so every
format computes the same spikes bit for bit:

* ``standard``: only ai.onnx ops. Each IFNode becomes the Scan over T of its
  function body, specialised to the node's reset mode (no If). Neuron ops of
  other domains (user-defined neurons) have their local functions inlined.
* ``streaming``: one time step per run, for frame-by-frame inference. T is
  fixed to 1, inputs are one frame [1, N, ...], and each IFNode is one step
  with explicit state: input ``<node>__v`` (its default, an initializer, is
  the initial potential as [1, 1], which broadcasts, so step 0 needs no state
  feed) and output ``<node>__v_next`` [N, F] (the layer's features
  flattened), to feed back at the next step. The pairs are listed, as JSON,
  in the model metadata under ``STREAMING_STATES``; ``StreamingSession``
  (``onnx_snn.runtime.streaming``) runs such a model.
* ``chunked``: any number of steps per run, with every state (potentials, running
  sums, previous steps, the step count) as inputs and outputs carried from run
  to run (``onnx_snn.export.chunked``, docs/chunked-execution.md).
"""

from __future__ import annotations

import onnx

from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.chunked import to_chunked
from onnx_snn.export.standard import to_standard
from onnx_snn.export.streaming import to_streaming
from onnx_snn.io.models import ModelLike, load_model

FORMATS = ("onnx-snn", "standard", "streaming", "chunked")


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of ``FORMATS``; a clear error otherwise."""
    if fmt not in FORMATS:
        raise OnnxSnnError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def export_format(model: ModelLike, fmt: str) -> onnx.ModelProto:
    """A converted (onnx-snn format) model in format ``fmt`` (one of ``FORMATS``)."""
    exporters = {"onnx-snn": load_model, "standard": to_standard, "streaming": to_streaming,
                 "chunked": to_chunked}
    return exporters[check_format(fmt)](model)
