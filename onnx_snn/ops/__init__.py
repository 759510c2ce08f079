"""The custom ops: the IF dynamics defined once (``dynamics``), the ONNX function
bodies built from them (``function_bodies``), the time ops of time-difference ops
(``time_ops``), and the native kernel library (``native``)."""
