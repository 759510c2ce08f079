"""Calibration: the statistic of each Relu, collected in onnxruntime
(docs/semantics.md, "Calibration statistics" and "Post-training improvements").

- ``modes``: the calibration modes, parsed once; numpy's percentile arithmetic.
- ``collectors``: the ``Collector`` base class, ``VoltageHook`` (the moving
  average of a per-batch statistic).
- ``balancing``: ``ThresholdBalancingHook``, thresholds that minimise the spiking
  rate's error, balanced layer by layer; ``histogram``, its batch-independent statistics.
- ``factories``: ``HookFactory`` and ``BalancingHookFactory``, the public API.
- ``driver``: ``calibrate``, which runs the ANN and feeds the collectors.
- ``result``: ``Calibration``, checked and saved as JSON.
- ``bias``: light bias calibration, layer by layer on the spiking model.
"""

from onnx_snn.calibration.balancing import ThresholdBalancingHook
from onnx_snn.calibration.collectors import Collector, CollectorFactory, VoltageHook
from onnx_snn.calibration.driver import calibrate
from onnx_snn.calibration.factories import BalancingHookFactory, HookFactory
from onnx_snn.calibration.modes import CalibrationMode, Mode
from onnx_snn.calibration.result import Calibration, LayerCalibration, check_scales

__all__ = ["BalancingHookFactory", "Calibration", "CalibrationMode", "Collector",
           "CollectorFactory", "HookFactory", "LayerCalibration", "Mode",
           "ThresholdBalancingHook", "VoltageHook", "calibrate", "check_scales"]
