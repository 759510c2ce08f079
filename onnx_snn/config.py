"""Every setting of a conversion in one ``ConversionConfig``; a preset is one.

``convert(model, data, config, **settings)`` starts from ``config`` (or the preset
named by ``preset=``, ``spikingjelly`` by default) and replaces the fields given
as keywords. The command line builds its config the same way, from the preset
and the options given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import onnx_graphsurgeon as gs

from onnx_snn.calibration.bias import check_bias_steps
from onnx_snn.calibration.collectors import CollectorFactory
from onnx_snn.calibration.factories import BalancingHookFactory, HookFactory
from onnx_snn.errors import OnnxSnnError
from onnx_snn.export.formats import check_format
from onnx_snn.graph.pooling import check_policy
from onnx_snn.snn.neurons import NeuronFactory
from onnx_snn.validation import check_bool, check_positive_int

#: Picks the factories for one Relu node, or None to keep it an analog Relu.
FactoryChooser = Callable[[gs.Node], "tuple[CollectorFactory, NeuronFactory] | None"]


@dataclass(frozen=True)
class ConversionConfig:
    """How a conversion is done (see ``onnx_snn.api.convert``).

    ``hook_factory`` makes each Relu's statistic collector and
    ``neuron_factory`` its neuron; ``factories(node)`` may choose both per node.
    ``exclude`` names Relus that stay analog. ``keep_analog`` runs nonlinear
    ops step by step and adds no signed neurons, instead of making them
    time-difference ops. ``maxpool`` is the
    MaxPool policy (``onnx_snn.graph.pooling``); ``drop_output_softmax`` removes a
    Softmax at the output. ``bias_calibration=T`` shifts each layer's bias so its
    mean output at T steps matches the ANN. ``spike_counts`` adds an output
    ``<layer>__spike_count`` per neuron layer. ``format`` is the model's form:
    "onnx-snn", "standard" or "streaming". ``target_timesteps`` is the T that
    the ``auto`` preset chooses its methods for (``onnx_snn.search``). Every
    value is checked when the config is made.
    """

    hook_factory: CollectorFactory = field(default_factory=HookFactory)
    neuron_factory: NeuronFactory = field(default_factory=NeuronFactory)
    batch_size: int = 100
    maxpool: str = "keep"
    exclude: Collection[str] = ()
    factories: FactoryChooser | None = None
    keep_analog: bool = False
    drop_output_softmax: bool = False
    bias_calibration: int | None = None
    spike_counts: bool = False
    format: str = "onnx-snn"
    target_timesteps: int | None = None

    def __post_init__(self) -> None:
        for name in ("hook_factory", "neuron_factory"):
            if not callable(getattr(getattr(self, name), "create", None)):
                raise OnnxSnnError(f"{name} must be a factory with a create() method "
                                   f"(HookFactory, NeuronFactory), got {getattr(self, name)!r}")
        check_positive_int(self.batch_size, "batch size")
        check_policy(self.maxpool)
        if isinstance(self.exclude, str) or not isinstance(self.exclude, Collection) \
                or not all(isinstance(name, str) for name in self.exclude):
            raise OnnxSnnError(f"exclude must be a list of node names, got {self.exclude!r}")
        if self.factories is not None and not callable(self.factories):
            raise OnnxSnnError(f"factories must be a function node -> (HookFactory, "
                               f"NeuronFactory) or None, got {self.factories!r}")
        for flag in ("keep_analog", "drop_output_softmax", "spike_counts"):
            check_bool(getattr(self, flag), flag)
        if self.bias_calibration is not None:
            check_bias_steps(self.bias_calibration)
        check_format(self.format)
        if self.target_timesteps is not None:
            check_positive_int(self.target_timesteps, "target timesteps")

    def replace(self, **settings: Any) -> ConversionConfig:
        """A copy with ``settings`` changed; settings given as None keep their value."""
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise OnnxSnnError(f"unknown conversion setting {', '.join(map(repr, unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in settings.items() if v is not None})


#: ``spikingjelly``: the classic conversion, as SpikingJelly's ann2snn does it: one
#: scale per layer (``HookFactory``: Max, momentum 0.1), IF neurons with θ = 1, soft
#: reset, starting at 0, MaxPool kept. It is the default. ``best``: threshold
#: balancing for 16 levels, half-threshold start and the TD MaxPool, chosen on the
#: digits CNN, the residual digits CNN, ResNet-20 and VGG-11 trained by
#: ``benchmarks/deep_curves.py`` (also measured there: MobileNetV2) and the
#: random-weight zoo (``benchmarks/zoo_error.py``):
#: fewer levels (4 or 8) are more accurate at T <= 8 on the trained nets but bias
#: the random ones (correlation with the ANN 0.3-0.9); ``auto`` picks per target T.
PRESETS: dict[str, ConversionConfig] = {
    "spikingjelly": ConversionConfig(),
    "best": ConversionConfig(hook_factory=BalancingHookFactory(timesteps=16),
                             neuron_factory=NeuronFactory(v_init=0.5), maxpool="td"),
}


#: The preset that is a search, not a config: ``onnx_snn.search`` tries combinations of
#: methods at ``target_timesteps`` and keeps the one that follows the ANN best.
AUTO = "auto"
#: Every preset name ``convert`` and ``--preset`` take.
PRESET_NAMES = (*PRESETS, AUTO)


def resolve_config(config: ConversionConfig | None, preset: str | None,
                   settings: dict[str, Any]) -> ConversionConfig:
    """``config``, or the preset named ``preset`` (default ``spikingjelly``; for
    ``auto``, the settings the search starts from), with ``settings`` replaced."""
    if config is not None and preset is not None:
        raise OnnxSnnError("give a config or a preset, not both")
    if config is not None and not isinstance(config, ConversionConfig):
        raise OnnxSnnError(f"config must be a ConversionConfig, got {type(config).__name__}")
    if preset is not None and preset not in PRESET_NAMES:
        raise OnnxSnnError(f"unknown preset {preset!r}: use one of {', '.join(PRESET_NAMES)}")
    resolved = (config or PRESETS["spikingjelly" if preset in (None, AUTO) else preset]
                ).replace(**settings)
    if (preset == AUTO) != (resolved.target_timesteps is not None):
        raise OnnxSnnError("preset auto needs a target T (target_timesteps, "
                           "--target-timesteps)" if preset == AUTO else
                           "target_timesteps is the T that preset auto aims at: use it "
                           "with preset auto")
    return resolved
