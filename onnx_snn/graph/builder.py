"""A thin layer over onnx-graphsurgeon's ``Graph.layer``: nodes and constants named
from one fresh prefix (``onnx_snn.graph.naming``), with their output dtype, and
reductions in the form the graph's opset expects."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_snn.graph.naming import NameScope

#: ai.onnx opset from which these reductions take ``axes`` as an input.
_AXES_AS_INPUT = {"ReduceSum": 13, "ReduceMax": 18, "ReduceMin": 18, "ReduceMean": 18,
                  "ReduceL1": 18}


class GraphBuilder:
    """``make(op, inputs, dtype)`` appends a node and returns its (new) output.

    Names start with a fresh version of ``prefix`` (``onnx_snn.graph.naming``), so they
    collide with no name in the graph; builders of one pass may share ``scope``.
    """

    def __init__(self, graph: gs.Graph, prefix: str, scope: NameScope | None = None) -> None:
        self.graph = graph
        self.scope = scope or NameScope.of(graph)
        self.prefix = self.scope.prefix(prefix)
        self.count = 0

    def _name(self, op: str) -> str:
        self.count += 1
        return self.scope.name(f"{self.prefix}{op.lower()}{self.count}")

    def name(self, suffix: str) -> str:
        """A fresh name of this builder's own: the prefix and ``suffix`` (``_<k>``
        appended when a name asked for before took it: a node's outputs are
        several, ``suffix`` is often made from the node's name)."""
        return self.scope.name(f"{self.prefix}{suffix}")

    def __call__(self, op: str, inputs: list, dtype=None, attrs: dict | None = None,
                 output: gs.Variable | None = None, domain: str | None = None) -> gs.Variable:
        name = self._name(op)
        out = output if output is not None else gs.Variable(name, dtype)
        return self.graph.layer(op=op, name=name, inputs=inputs, outputs=[out],
                                attrs=attrs or {}, domain=domain)[0]

    def const(self, values, dtype=np.int64) -> gs.Constant:
        return gs.Constant(self._name("c"), np.asarray(values, dtype=dtype))

    def reduce(self, op: str, data: gs.Tensor, axes: list[int] | None, dtype) -> gs.Variable:
        """``op`` (ReduceMax, ReduceSum, ...) over ``axes`` (None: all), keepdims=0, in
        the form the graph's opset expects."""
        if axes is None:
            return self(op, [data], dtype, {"keepdims": 0})
        if (self.graph.opset or 0) >= _AXES_AS_INPUT[op]:
            return self(op, [data, self.const(axes)], dtype, {"keepdims": 0})
        return self(op, [data], dtype, {"keepdims": 0, "axes": axes})
