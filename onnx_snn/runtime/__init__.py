"""Running converted models: sessions for every format, predictions and readout.

- ``sessions``: onnxruntime sessions (``SpikingSession``, ``AnnSession``,
  ``session_options``, ``run_snn``);
- ``streaming``: ``StreamingSession`` for the streaming format, and ``open_session``;
- ``predictions``: which output is scored, and the delayed readout;
- ``readout``: estimating the readout delay on calibration data.
"""

from onnx_snn.runtime.sessions import (
    AnnSession,
    SpikingOutput,
    SpikingSession,
    check_timesteps,
    create_session,
    run_snn,
    session_options,
)

__all__ = ["AnnSession", "SpikingOutput", "SpikingSession", "check_timesteps", "create_session",
           "run_snn", "session_options"]
