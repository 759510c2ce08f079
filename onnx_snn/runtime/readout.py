"""Estimating the readout delay (``onnx_snn.runtime.predictions``) on calibration data:
the delay whose prediction after T steps agrees best with reference labels or with
the ANN (Hwang et al. 2021, "Low-latency spiking neural networks using pre-charged
membrane potential and delayed evaluation", Frontiers in Neuroscience 15:629000).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import batches, check_batch_size, labelled_batches
from onnx_snn.io.models import ModelLike
from onnx_snn.runtime.predictions import (
    ann_predictions,
    check_delay,
    check_per_step,
    choose_output,
)
from onnx_snn.runtime.sessions import AnnSession, SpikingSession, check_timesteps


def estimate_readout_delay(model: ModelLike | SpikingSession, x: Any, timesteps: int,
                           reference: Any = None, max_delay: int | None = None,
                           batch_size: int = 256, *, ann: ModelLike | None = None,
                           output: str | None = None) -> int:
    """The readout delay t0 that best matches a reference on calibration data.

    Runs the converted ``model`` once for ``timesteps`` steps (direct encoding)
    on ``x`` (any form ``onnx_snn.io.data`` reads), in batches of ``batch_size``,
    and returns the t0 in ``[0, max_delay]`` (default ``timesteps // 2``; at
    most ``timesteps - 1``) whose delayed prediction after ``timesteps`` steps
    (argmax of the sum of outputs t0+1..T, see ``delayed_predictions``) agrees
    with the reference on the most samples. Ties go to the smallest t0, so 0 is
    kept unless a delay helps. This is the delayed evaluation of Hwang et al.
    2021 (Frontiers in Neuroscience 15:629000), with the delay chosen on data
    rather than by hand.

    The reference is either ``reference``, integer labels [N] (for instance the
    training labels), or ``ann``, the original network (path or ModelProto),
    whose predictions onnxruntime computes batch by batch; give exactly one.
    With labels, t0 maximises the accuracy on ``x`` at T = ``timesteps``.
    ``output`` picks the scored output (``choose_output``).

    Memory stays at one batch: per batch, the agreement of every candidate t0
    is counted from the cumulative sum of the outputs, and only the counts are
    kept.
    """
    session = model if isinstance(model, SpikingSession) else SpikingSession(model)
    timesteps = check_timesteps(timesteps)
    batch_size = check_batch_size(batch_size)
    max_delay = timesteps // 2 if max_delay is None else check_delay(max_delay, "max_delay")
    if max_delay >= timesteps:
        raise OnnxSnnError(f"max_delay must be below the number of time steps "
                           f"({timesteps}), got {max_delay}")
    if (reference is None) == (ann is None):
        raise OnnxSnnError("give exactly one of reference (labels) and ann (the ANN)")
    scored = choose_output(session.output_types, output)
    if scored.labels:
        raise OnnxSnnError(f"output '{scored.name}' holds labels: a readout delay needs "
                           "class scores (choose a scores output)")
    if ann is not None:
        network = AnnSession(ann, [scored.name])
        pairs = ((feed, ann_predictions(scored, network.run(feed)[0]))
                 for feed in batches(x, session.batch_specs, batch_size))
    else:
        pairs = ((batch.feed, batch.labels)
                 for batch in labelled_batches(x, session.batch_specs, batch_size, reference))

    agree = np.zeros(max_delay + 1, dtype=np.int64)
    for feed, target in pairs:
        per_step = check_per_step(session.run(feed, timesteps).outputs[scored.name])
        cumulative = np.cumsum(per_step, axis=0, dtype=np.float64)
        # Sum of outputs t0+1..T for every candidate t0: C_T - C_t0 (C_0 = 0).
        before = np.concatenate([np.zeros_like(cumulative[:1]), cumulative[:max_delay]])
        predicted = (cumulative[-1] - before).argmax(axis=-1)       # [max_delay+1, n, ...]
        agree += (predicted == target).reshape(max_delay + 1, -1).sum(axis=1)
    return int(np.argmax(agree))  # the first maximum: ties go to the smallest t0
