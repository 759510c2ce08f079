"""What the standard and streaming exports share: the IFNode parameters and one
step of its dynamics as plain nodes (``if_step``, so every format computes the
same spikes bit for bit), and small helpers on ONNX protos."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_snn.errors import OnnxSnnError
from onnx_snn.graph.registry import STANDARD_DOMAINS
from onnx_snn.io.metadata import TIMESTEPS, TIMESTEPS_KEY, metadata
from onnx_snn.io.models import ModelLike, load_model
from onnx_snn.ops.dynamics import GraphArithmetic, if_step, spike_range
from onnx_snn.ops.function_bodies import DOMAIN, IF_ATTRIBUTE_DEFAULTS, IF_ATTRIBUTES, IF_OP_TYPE


@dataclass(frozen=True)
class IFNeuronStep:
    """One IFNode's parameters, and the constants its specialised step reads."""

    prefix: str
    theta: np.float32
    v_reset: np.float32
    v_start: np.float32
    hard_reset: bool
    broadcast_input: bool
    #: (least, most) spikes a step of a burst or signed neuron; None for the plain one.
    spike_range: tuple[np.float32, np.float32] | None

    @classmethod
    def of(cls, node: onnx.NodeProto, prefix: str) -> IFNeuronStep:
        values = {**IF_ATTRIBUTE_DEFAULTS,
                  **{a.name: helper.get_attribute_value(a) for a in node.attribute}}
        missing = [name for name in IF_ATTRIBUTES if name not in values]
        if missing:
            raise OnnxSnnError(f"IFNode '{node.name}' lacks attribute(s) {', '.join(missing)}; "
                               f"expected {', '.join(IF_ATTRIBUTES)}")
        theta = np.float32(values["v_threshold"])
        return cls(prefix, theta, np.float32(values["v_reset"]),
                   np.float32(values["v_init"]) * theta, bool(values["hard_reset"]),
                   bool(values["broadcast_input"]),
                   spike_range(values["max_spikes"], bool(values["signed"])))

    def constants(self) -> list[TensorProto]:
        """Initializers for the names ``step`` uses (θ; v_reset for hard reset; the
        spike range of a burst or signed neuron)."""
        values = {"theta": self.theta}
        if self.hard_reset:
            values["v_reset"] = self.v_reset
        if self.spike_range is not None:
            values["spikes_low"], values["spikes_high"] = self.spike_range
        return [numpy_helper.from_array(np.asarray(value, np.float32), self.prefix + name)
                for name, value in values.items()]

    def step(self, ops: GraphArithmetic, v: str, x: str, hard_reset: bool) -> tuple[str, str]:
        """``if_step`` on this neuron's constants."""
        p = self.prefix
        limits = None if self.spike_range is None else (f"{p}spikes_low", f"{p}spikes_high")
        return if_step(ops, v, x, f"{p}theta", f"{p}v_reset", hard_reset, limits)


def folded_copy(model: ModelLike) -> tuple[onnx.ModelProto, str]:
    """A copy of an onnx-snn format model (one with a T input), and its T input's name."""
    source = load_model(model)
    steps = metadata(source).get(TIMESTEPS_KEY, TIMESTEPS)
    if steps not in [value.name for value in source.graph.input]:
        raise OnnxSnnError(f"not an onnx-snn format model: it has no '{steps}' input")
    copy = onnx.ModelProto()
    copy.CopyFrom(source)
    return copy, steps


def is_if_node(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == IF_OP_TYPE


def custom_nodes(nodes: Iterable[onnx.NodeProto]) -> list[onnx.NodeProto]:
    return [node for node in nodes if node.domain not in STANDARD_DOMAINS]


def replace_all(field, values: list) -> None:
    """Set a repeated message field to copies of ``values`` (which may be its own items)."""
    copies = []
    for value in values:
        copies.append(type(value)())
        copies[-1].CopyFrom(value)
    del field[:]
    field.extend(copies)


def drop_unused_domains(model: onnx.ModelProto) -> None:
    """Remove opset imports of custom domains that no node uses any more."""
    used = {node.domain for node in model.graph.node}
    kept = [entry for entry in model.opset_import
            if entry.domain in STANDARD_DOMAINS or entry.domain in used]
    replace_all(model.opset_import, kept)


def names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name of the graph's top level."""
    names = {value.name for value in [*graph.input, *graph.output, *graph.value_info]}
    names |= {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def declared_ranks(graph: onnx.GraphProto) -> dict[str, int]:
    """The rank of every tensor whose shape the graph declares (or inference found)."""
    return {value.name: len(value.type.tensor_type.shape.dim)
            for value in [*graph.input, *graph.value_info, *graph.output]
            if value.type.tensor_type.HasField("shape")}


def identifier(name: str) -> str:
    """``name`` with every character outside [A-Za-z0-9_] replaced by ``_``."""
    return re.sub(r"\W", "_", name, flags=re.ASCII) or "ifnode"
