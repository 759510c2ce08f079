"""One IFNode and its function as a whole model, for probing a backend, benchmarks and
tests (the native kernels' self-check loads it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx
from onnx import TensorProto, helper

from onnx_snn.ops.function_bodies import (
    DOMAIN,
    DOMAIN_VERSION,
    IF_ATTRIBUTE_DEFAULTS,
    IF_OP_TYPE,
    if_node_function,
)


def if_node_model(attributes: Mapping[str, Any], x_dims: Sequence[int | str | None],
                  opset: int = 17, with_state: bool = False) -> onnx.ModelProto:
    """A model of one IFNode with its function: inputs ``X`` (float32, ``x_dims``)
    and ``T``, output ``S`` [T·N, ...]; attributes not given take their defaults
    (``IF_ATTRIBUTE_DEFAULTS``). With ``with_state`` the node and its function also
    take ``V`` and give ``V_next``, declared as one step's potentials [N, ...] (a V of
    one value, e.g. [1, 1], needs V's shape cleared). For probing a backend,
    benchmarks and tests."""
    state_in, state_out = (["V"], ["V_next"]) if with_state else ([], [])
    node = helper.make_node(IF_OP_TYPE, ["X", "T", *state_in], ["S", *state_out], name="ifnode",
                            domain=DOMAIN, **{**IF_ATTRIBUTE_DEFAULTS, **attributes})
    sample_dims = x_dims[2:] if attributes.get("broadcast_input") else x_dims[1:]

    def potentials(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *sample_dims])

    graph = helper.make_graph(
        [node], "ifnode",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_dims)),
         helper.make_tensor_value_info("T", TensorProto.INT64, []), *map(potentials, state_in)],
        [helper.make_tensor_value_info("S", TensorProto.FLOAT, [None, *sample_dims]),
         *map(potentials, state_out)])
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]
    model = helper.make_model(graph, functions=[if_node_function(opset, with_state)],
                              opset_imports=opsets)
    # the oldest IR the opset allows (older runtimes load it), and 8 for model functions
    model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8)
    return model
