"""The factories of the public API (shape from SpikingJelly's ann2snn;
docs/semantics.md, "Factories"): each makes a fresh collector per converted Relu."""

from __future__ import annotations

from onnx_snn.calibration.balancing import BALANCED_TIMESTEPS, ThresholdBalancingHook
from onnx_snn.calibration.collectors import CollectorFactory, VoltageHook
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
    """Makes a ``ThresholdBalancingHook`` per Relu: per channel, the threshold θ that
    minimises the squared error between the ANN's activation x and the rate
    ``θ·clip(floor(L·x/θ + v_init), 0, L)/L`` of an IF neuron, over all the
    calibration data, with the layers above already balanced (one pass over the data
    per layer depth); the result does not depend on the batch size. ``timesteps`` is
    L, the number of levels the SNN resolves: T, or T·B for burst neurons of up to B
    spikes a step (default ``BALANCED_TIMESTEPS``, 16: a few-step target).
    ``v_init`` is the neurons' initial potential as a fraction of θ; θ is never
    below ``eps``.
    """

    def __init__(self, timesteps: int = BALANCED_TIMESTEPS, v_init: float = 0.5,
                 eps: float = 1e-6) -> None:
        super().__init__(ThresholdBalancingHook, timesteps=timesteps, v_init=v_init, eps=eps)
        self.timesteps = timesteps
        self.v_init = v_init
        self.eps = eps
