"""Spiking neurons as ONNX node descriptions, and the factory that makes them.

A neuron here is not a torch module: it describes the ONNX node that replaces a
Relu (op type, domain, attributes) and supplies the ONNX function body that
defines it. Every neuron op has the same signature::

    NeuronOp(X: float [T*N, ...], T: int64 scalar) -> float [T*N, ...]

so the rewrite can treat built-in and user-defined neurons alike.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_snn.errors import OnnxSnnError
from onnx_snn.ops.function_bodies import DOMAIN, IF_OP_TYPE, if_node_function
from onnx_snn.validation import check_bool, check_finite, check_float32_normal

#: The most spikes a step a burst neuron may fire: counts stay exact in float32.
MAX_SPIKES_LIMIT = 1 << 24
#: The largest threshold and reset magnitude: a potential that grows by up to 2^40
#: thresholds a step for 2^24 steps then stays finite in float32 (2^63+40+24 = 2^127).
MAX_POTENTIAL_SETTING = 2.0 ** 63


def check_potential_setting(value: Any, what: str, positive: bool) -> float:
    """``value`` if float32 holds the potentials it leads to over T steps: a normal
    positive number (``positive``) or a finite one, of magnitude at most 2^63."""
    checked = check_float32_normal(value, what) if positive else check_finite(value, what)
    if abs(checked) > MAX_POTENTIAL_SETTING:
        raise OnnxSnnError(f"{what} must be at most 2^63 ({MAX_POTENTIAL_SETTING:.4g}) in "
                           "magnitude, so that the membrane potential stays finite in float32 "
                           f"over T steps, got {value!r}")
    return checked


def check_max_spikes(value: Any) -> int:
    """``value`` if it is a whole number of spikes per step in [1, 2^24]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= MAX_SPIKES_LIMIT:
        raise OnnxSnnError(f"max_spikes is the most spikes a step, a whole number in "
                           f"[1, {MAX_SPIKES_LIMIT}], got {value!r}")
    return int(value)


class Neuron:
    """Base class for a neuron that replaces a Relu.

    Subclasses set ``op_type`` and ``domain`` and implement ``attributes`` and
    ``function``. The constructor must accept ``v_threshold`` and ``v_reset``
    keyword arguments, which is what ``NeuronFactory`` passes. Defining such a
    subclass registers its (domain, op type): that is how the passes recognise
    its nodes (``is_neuron``). A neuron whose attributes include
    ``broadcast_input`` reads a static input [S, N, ...] itself when it is the
    first neuron (``onnx_snn.snn.time_folding``), as ``IFNode`` does.

    ``capabilities`` declares what the type takes beyond that: ``"signed"``, a
    ``signed=True`` keyword making a neuron that also fires negative spikes, which the
    conversion puts where a weighted layer reads values of either sign; ``"v_init"``,
    a ``v_init=`` keyword (the initial potential as a fraction of the threshold).
    A graph that needs a capability the type lacks is refused before calibration,
    naming it (``NeuronFactory.signed_variant``).
    """

    op_type: str
    domain: str
    domain_version: int = 1
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Whether this neuron fires negative spikes too (a "signed" type's signed variant).
    signed: bool = False
    #: Every neuron type, by (domain, op type).
    registered: ClassVar[dict[tuple[str, str], type[Neuron]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "op_type", None) and getattr(cls, "domain", None):
            Neuron.registered[(cls.domain, cls.op_type)] = cls

    def __init__(self, v_threshold: float = 1.0, v_reset: float | None = None) -> None:
        self.v_threshold = check_potential_setting(v_threshold, "v_threshold", positive=True)
        self.v_reset = None if v_reset is None else check_potential_setting(
            v_reset, "v_reset", positive=False)

    def attributes(self) -> dict[str, Any]:
        """Every attribute of the node, written out explicitly."""
        raise NotImplementedError

    @property
    def max_spikes(self) -> int:
        """The most spikes the neuron fires in one step: at the calibrated scale it
        fires this many, so one spike stands for the scale divided by it."""
        return 1

    def function(self, opset: int) -> onnx.FunctionProto:
        """The model-local ONNX function that defines the op (ai.onnx ``opset``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.attributes()})"


def is_neuron(node: gs.Node) -> bool:
    """True for a node of a registered neuron type."""
    return (node.domain, node.op) in Neuron.registered


class IFNeuron(Neuron):
    """Integrate-and-fire neuron (docs/semantics.md, "IF neuron"); ``v_reset=None`` is
    soft reset.

    ``v_init`` is the membrane potential at t = 0 as a fraction of the
    threshold. 0 is the classic conversion; 0.5 rounds instead of floors the
    rate and helps most at small T (Bu et al., "Optimized potential
    initialization for low-latency spiking neural networks", AAAI 2022).

    ``max_spikes`` B > 1 makes a burst neuron, which fires up to B spikes in
    one step, so T steps resolve B·T levels (Li & Zeng, "Efficient and accurate
    conversion of spiking neural network with burst spikes", IJCAI 2022).
    ``signed`` adds a negative threshold: down to -B spikes a step, for values
    of either sign (docs/semantics.md, "Burst and signed neurons").
    """

    op_type = IF_OP_TYPE
    domain = DOMAIN
    capabilities = frozenset({"signed", "v_init"})

    def __init__(self, v_threshold: float = 1.0, v_reset: float | None = None,
                 v_init: float = 0.0, max_spikes: int = 1, signed: bool = False) -> None:
        super().__init__(v_threshold, v_reset)
        self.v_init = check_finite(v_init, "v_init")
        if not 0.0 <= self.v_init <= 1.0:
            raise OnnxSnnError(f"v_init is a fraction of the threshold in [0, 1], got {v_init!r}")
        self._max_spikes = check_max_spikes(max_spikes)
        self.signed = check_bool(signed, "signed")

    @property
    def max_spikes(self) -> int:
        return self._max_spikes

    def attributes(self) -> dict[str, Any]:
        return {
            "v_threshold": self.v_threshold,
            "v_reset": 0.0 if self.v_reset is None else self.v_reset,
            "v_init": self.v_init,
            "hard_reset": int(self.v_reset is not None),
            "broadcast_input": 0,  # the time folding sets 1 where it feeds [1, N, ...]
            "max_spikes": self.max_spikes,
            "signed": int(self.signed),
        }

    def function(self, opset: int) -> onnx.FunctionProto:
        return if_node_function(opset)


class NeuronFactory:
    """Makes the neuron that replaces each Relu.

    ``neuron_type`` is called as ``neuron_type(v_threshold=..., v_reset=...,
    **kwargs)``. ``v_reset=None`` means soft (subtractive) reset. The default
    ``create`` ignores the calibrated ``scale``: the rewrite already scales the
    neuron's input by ``v_threshold / scale`` and its output by ``scale``.
    Subclasses may override ``create`` to derive the threshold (or anything
    else) from ``scale``.
    """

    def __init__(self, neuron_type: Callable[..., Neuron] = IFNeuron, v_threshold: float = 1.0,
                 v_reset: float | None = None, **kwargs: Any) -> None:
        if not callable(neuron_type):
            raise OnnxSnnError(f"neuron_type must be a Neuron class, got {neuron_type!r}")
        self.neuron_type = neuron_type
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.neuron_kwargs = kwargs
        self.make(v_threshold=v_threshold, v_reset=v_reset)  # bad settings fail here

    def make(self, **settings: Any) -> Neuron:
        """``neuron_type(**settings, **kwargs)``; a wrong keyword is an ``OnnxSnnError``."""
        try:
            neuron = self.neuron_type(**settings, **self.neuron_kwargs)
        except (TypeError, ValueError) as error:
            raise OnnxSnnError(f"cannot make a {getattr(self.neuron_type, '__name__', 'neuron')}"
                               f": {error}") from error
        if not isinstance(neuron, Neuron):
            raise OnnxSnnError(f"neuron_type made a {type(neuron).__name__}, not a Neuron")
        return neuron

    def replace(self, **settings: Any) -> NeuronFactory:
        """A ``NeuronFactory`` of the same neuron type with ``settings`` (``v_threshold``,
        ``v_reset`` or the neuron's own keywords) changed."""
        current = {"v_threshold": self.v_threshold, "v_reset": self.v_reset,
                   **self.neuron_kwargs}
        return NeuronFactory(self.neuron_type, **{**current, **settings})

    def signed_variant(self, node: str, defaults: dict[str, Any]) -> NeuronFactory:
        """The factory of this type's signed neurons, for the site ``node``, with
        ``defaults`` for the settings not given that the type takes; an error naming the
        capability when the type has no signed variant."""
        capabilities = getattr(self.neuron_type, "capabilities", frozenset())
        if "signed" not in capabilities:
            name = getattr(self.neuron_type, "__name__", "the neuron type")
            raise OnnxSnnError(
                f"'{node}' needs a signed neuron (a weighted layer reads values of either "
                f"sign there), and {name} does not declare the 'signed' capability "
                "(Neuron.capabilities): use IFNeuron there, or keep_analog=True "
                "(--keep-analog)")
        return self.replace(signed=True, **{key: value for key, value in defaults.items()
                                            if key in capabilities
                                            and key not in self.neuron_kwargs})

    def create(self, scale: float) -> Neuron:
        """A neuron for a Relu whose calibrated scale is ``scale``."""
        return self.make(v_threshold=self.v_threshold, v_reset=self.v_reset)
