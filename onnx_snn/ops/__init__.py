"""The neuron ops: the IF dynamics defined once (``dynamics``), the ONNX function
bodies built from them (``function_bodies``), and the native kernel library
(``native``)."""
