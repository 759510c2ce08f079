"""The integrate-and-fire dynamics, defined once.

``if_step`` is written against a tiny arithmetic interface (``Arithmetic``).
The numpy reference (``simulate_if``, ``NumpyArithmetic``) runs it on arrays, and
the ONNX function builder (``onnx_snn.ops.function_bodies``) runs the very same code
on ``GraphArithmetic``, which emits one node per operation. Tests compare the two
engines, so any change to the dynamics changes both at once.

Per element, with membrane potential ``v`` (docs/semantics.md, "IF neuron")::

    h = v + x_t                      # charge
    s = 1 if h >= theta else 0       # fire; the boundary counts
    v = h - s * theta                # soft reset (v_reset is None)
    v = v_reset if s else h          # hard reset

A burst neuron fires up to B spikes a step, a signed one also down to -B
(docs/semantics.md, "Burst and signed neurons"):
``s = clip(floor(h / theta), least, most)``, then the same resets.

The soft reset is arithmetic, exact and cheap (docs/semantics.md, "Runtime facts").
The hard reset is a select: the arithmetic form ``h * (1 - s) + s * v_reset`` turns h = +inf into
NaN (inf * 0), while a select keeps every finite and infinite potential.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper


class Arithmetic(Protocol):
    """The operations ``if_step`` needs; values are arrays or graph tensor names."""

    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...
    def at_least(self, h: Any, theta: Any) -> Any:
        """The boolean mask ``h >= theta``."""
        ...
    def as_float(self, mask: Any) -> Any:
        """1.0 where ``mask`` holds, else 0.0 (float32)."""
        ...
    def select(self, mask: Any, a: Any, b: Any) -> Any:
        """``a`` where ``mask`` holds, else ``b``."""
        ...
    def floor_ratio(self, h: Any, theta: Any) -> Any:
        """``floor(h / theta)``, a true division (float32)."""
        ...
    def clip(self, a: Any, low: Any, high: Any) -> Any:
        """``a`` limited to [low, high]; NaN stays NaN."""
        ...
    def nonzero(self, a: Any) -> Any:
        """The boolean mask ``a != 0``."""
        ...


def if_step(ops: Arithmetic, v: Any, x: Any, theta: Any, v_reset: Any, hard_reset: bool,
            spike_range: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """One time step of the IF neuron: returns ``(new potential, spikes)``.

    ``spike_range`` is None for the plain neuron (one spike at most, fired at
    ``h >= θ``), or the (least, most) spikes per step of a burst or signed
    neuron (docs/semantics.md, "Burst and signed neurons"):
    ``k = clip(floor(h / θ), least, most)`` spikes, e.g. (0, B) or (-B, B); the hard
    reset then applies wherever ``k != 0``.
    """
    h = ops.add(v, x)
    if spike_range is None:
        fired = ops.at_least(h, theta)
        s = ops.as_float(fired)
    else:
        s = ops.clip(ops.floor_ratio(h, theta), *spike_range)
        fired = ops.nonzero(s) if hard_reset else None
    if hard_reset:
        v_new = ops.select(fired, v_reset, h)
    else:
        v_new = ops.sub(h, ops.mul(s, theta))
    return v_new, s


class NumpyArithmetic:
    """``Arithmetic`` on numpy arrays, keeping float32 throughout."""

    def add(self, a, b):
        return np.add(a, b)

    def sub(self, a, b):
        return np.subtract(a, b)

    def mul(self, a, b):
        return np.multiply(a, b)

    def at_least(self, h, theta):
        return np.greater_equal(h, theta)

    def as_float(self, mask):
        return mask.astype(np.float32)

    def select(self, mask, a, b):
        return np.where(mask, a, b).astype(np.float32)

    def floor_ratio(self, h, theta):
        return np.floor(np.divide(h, theta))

    def clip(self, a, low, high):
        return np.where(a < low, low, np.where(a > high, high, a)).astype(np.float32)

    def nonzero(self, a):
        return np.not_equal(a, 0)


class GraphArithmetic:
    """``Arithmetic`` that appends one ONNX node per operation to ``nodes``.

    Values are tensor names. Inside a step, each float attribute of the
    function is available as a tensor of the same name.
    """

    def __init__(self, prefix: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._prefix = prefix
        self._ids = itertools.count()

    def _emit(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"{self._prefix}{op.lower()}{next(self._ids)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def add(self, a: str, b: str) -> str:
        return self._emit("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self._emit("Sub", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self._emit("Mul", [a, b])

    def at_least(self, h: str, theta: str) -> str:
        return self._emit("GreaterOrEqual", [h, theta])

    def as_float(self, mask: str) -> str:
        return self._emit("Cast", [mask], to=TensorProto.FLOAT)

    def select(self, mask: str, a: str, b: str) -> str:
        return self._emit("Where", [mask, a, b])

    def floor_ratio(self, h: str, theta: str) -> str:
        return self._emit("Floor", [self._emit("Div", [h, theta])])

    def clip(self, a: str, low: str, high: str) -> str:
        return self._emit("Clip", [a, low, high])

    def nonzero(self, a: str) -> str:
        return self._emit("Not", [self._emit("Equal", [a, self._zero()])])

    def _zero(self) -> str:
        zero = f"{self._prefix}zero"
        if not any(zero in node.output for node in self.nodes):
            self.nodes.append(helper.make_node("Constant", [], [zero], value=helper.make_tensor(
                zero, TensorProto.FLOAT, [], [0.0])))
        return zero


def spike_range(max_spikes: int, signed: bool) -> tuple[np.float32, np.float32] | None:
    """The (least, most) spikes per step of a neuron that emits up to ``max_spikes`` a
    step, of either sign when ``signed``; None for the plain IF neuron."""
    if max_spikes == 1 and not signed:
        return None
    return np.float32(-max_spikes if signed else 0), np.float32(max_spikes)


def simulate_if(x_seq: np.ndarray, v_threshold: float = 1.0, v_reset: float | None = None,
                v_init: float = 0.0, max_spikes: int = 1, signed: bool = False,
                v_start: np.ndarray | None = None,
                return_potential: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Numpy reference: spikes for an input sequence ``x_seq`` of shape [T, ...].

    ``v_reset=None`` means soft (subtractive) reset. ``v_init`` is the initial
    potential as a fraction of the threshold (0.5 starts half-way to the first
    spike). ``max_spikes`` B > 1 makes a burst neuron (up to B spikes a step),
    ``signed`` one that also fires negative spikes
    (docs/semantics.md, "Burst and signed neurons"). Computation is float32, like the
    ONNX function and the native kernel, so results agree bit for bit.

    ``v_start`` (shape ``x_seq.shape[1:]``, or one value for every neuron: a scalar or
    any one-element array) gives the potentials before the first step instead, as
    absolute values (``v_init`` is then unused). With
    ``return_potential`` the result is ``(spikes, v)``, ``v`` the potentials after
    the last step: passed as the next call's ``v_start``, it continues the run
    exactly, so T steps may run in chunks.
    """
    x_seq = np.asarray(x_seq, dtype=np.float32)
    dtype = np.float32
    theta = dtype(v_threshold)
    reset = dtype(0.0 if v_reset is None else v_reset)
    v = _initial_potential(x_seq.shape[1:], dtype(v_init) * theta, v_start)
    spikes = np.empty_like(x_seq)
    ops = NumpyArithmetic()
    for t in range(x_seq.shape[0]):
        v, spikes[t] = if_step(ops, v, x_seq[t], theta, reset, v_reset is not None,
                               spike_range(max_spikes, signed))
    return (spikes, v) if return_potential else spikes


def _initial_potential(shape: tuple[int, ...], v_uniform: np.float32,
                       v_start: np.ndarray | float | None) -> np.ndarray:
    """The float32 potentials [shape] before the first step: a copy of ``v_start``,
    its one value everywhere where it holds one, or ``v_uniform`` everywhere when it
    is None."""
    if v_start is None:
        return np.full(shape, v_uniform, dtype=np.float32)
    v = np.array(v_start, dtype=np.float32)
    if v.size == 1 and v.shape != tuple(shape):
        return np.full(shape, v.reshape(()), dtype=np.float32)
    if v.shape != tuple(shape):
        raise ValueError(f"v_start must have one step's shape {tuple(shape)} or hold one "
                         f"value, got {v.shape}")
    return v
