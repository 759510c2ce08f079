"""onnx-snn: convert ONNX ReLU networks into spiking neural networks for onnxruntime.

Pipeline: data readers (``data``) -> calibration (``calibration``) -> graph
rewrite (``patterns``, ``spiking``, ``temporal``) -> ops (``ops``) -> runtime
(``runtime``) -> CLI (``cli``).
"""

__version__ = "0.1.0"

from onnx_snn.calibration import Calibration, HookFactory, VoltageHook, calibrate  # noqa: E402
from onnx_snn.convert import SpikingModel, convert  # noqa: E402
from onnx_snn.errors import OnnxSnnError  # noqa: E402
from onnx_snn.neurons import IFNeuron, Neuron, NeuronFactory  # noqa: E402
from onnx_snn.ops.dynamics import simulate_if  # noqa: E402
from onnx_snn.ops.native import native_library_path  # noqa: E402
from onnx_snn.patterns import Pattern, PatternPass, compose, run_passes  # noqa: E402
from onnx_snn.runtime import (  # noqa: E402
    SpikingSession, run_snn, session_options,
)

__all__ = [
    "Calibration", "HookFactory", "IFNeuron", "Neuron", "NeuronFactory", "OnnxSnnError",
    "Pattern", "PatternPass", "SpikingModel", "SpikingSession", "VoltageHook", "calibrate",
    "compose", "convert", "native_library_path", "run_passes", "run_snn", "session_options",
    "simulate_if",
]
