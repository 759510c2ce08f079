"""onnx-snn: convert ONNX ReLU networks into spiking neural networks for onnxruntime.

The package is laid out by pipeline stage (ARCHITECTURE.md): ``io`` (models, data,
outputs) -> ``graph`` (prepare, policies) -> ``ops`` (neuron dynamics) -> ``snn``
(the spiking model) -> ``runtime`` -> ``calibration`` -> ``export`` -> ``measure``,
with ``convert`` (``api``) and its settings (``config``) on top, and the command
line in ``cli``.
"""

from onnx_snn.api import SpikingModel, convert
from onnx_snn.calibration import (
    BalancingHookFactory,
    Calibration,
    HookFactory,
    VoltageHook,
    calibrate,
)
from onnx_snn.config import PRESETS, ConversionConfig
from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.patterns import Pattern, PatternPass, compose, run_passes
from onnx_snn.ops.dynamics import simulate_if
from onnx_snn.ops.native import native_library_path
from onnx_snn.runtime import SpikingSession, run_snn, session_options
from onnx_snn.snn.neurons import IFNeuron, Neuron, NeuronFactory
from onnx_snn.version import __version__

__all__ = [
    "BalancingHookFactory", "Calibration", "ConversionConfig", "HookFactory", "IFNeuron",
    "Neuron", "NeuronFactory", "OnnxSnnError", "PRESETS", "Pattern", "PatternPass",
    "SpikingModel", "SpikingSession", "VoltageHook", "__version__", "calibrate", "compose",
    "convert", "native_library_path", "run_passes", "run_snn", "session_options",
    "simulate_if",
]
