"""The factories of the public API (shape from SpikingJelly's ann2snn, SPEC §3): each
makes a fresh collector per converted Relu."""

from __future__ import annotations

from onnx_snn.calibration.collectors import (
    CollectorFactory, ThresholdBalancingHook, VoltageHook,
)
from onnx_snn.calibration.modes import Mode


class HookFactory(CollectorFactory):
    """Makes a fresh ``VoltageHook`` for each Relu that is converted.

    ``mode``: "Max" (any case), a percentile "P%" with 0 <= P <= 100, or a
    number f in (0, 1] meaning f times the maximum. ``momentum`` in [0, 1]
    weights each new batch in the moving average. ``per_channel`` keeps one
    scale per channel (axis 1) instead of one per layer: the biggest single
    gain on deep nets (Kim et al., "Spiking-YOLO", AAAI 2020). Bad settings
    are rejected here, not at calibration time.
    """

    def __init__(self, mode: Mode = "Max", momentum: float = 0.1,
                 per_channel: bool = False) -> None:
        super().__init__(VoltageHook, mode=mode, momentum=momentum, per_channel=per_channel)
        self.mode = mode
        self.momentum = momentum
        self.per_channel = per_channel

    def create(self) -> VoltageHook:
        """A new, empty collector."""
        return super().create()


class BalancingHookFactory(CollectorFactory):
    """Makes a ``ThresholdBalancingHook`` per Relu: local threshold balancing, one
    threshold per channel, never below ``eps``."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__(ThresholdBalancingHook, eps=eps)
        self.eps = eps
