"""A small, public graph-rewrite API on top of onnx-graphsurgeon.

A ``Pattern`` matches one node (or a few around it) and builds the subgraph that
replaces them. A ``PatternPass`` applies patterns to every matching node of a
graph. Any callable ``graph -> graph`` is a pass, and ``run_passes`` composes
passes over a model::

    class SwapMaxPool(Pattern):
        def match(self, node):
            return node.op == "MaxPool"

        def replace(self, node, graph):
            return [gs.Node("AveragePool", attrs=..., inputs=node.inputs,
                            outputs=node.outputs)]

    model = run_passes(model, PatternPass(SwapMaxPool()))

The built-in Relu -> spiking-neuron rewrite (``onnx_snn.snn.rewrite``) and the
MaxPool policies (``onnx_snn.graph.pooling``, one of them a two-node pattern) are
such patterns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnx_graphsurgeon as gs

GraphPass = Callable[[gs.Graph], gs.Graph]


class Pattern:
    """Match a node, or several nodes around it; replace them with a subgraph.

    ``match(node)`` returns False (no match), True (``node`` alone) or the
    matched nodes, ``node`` among them, for a pattern of several nodes.
    ``replace(node, graph)`` returns new nodes that read (some of) the matched
    nodes' inputs and write every tensor of theirs that is read elsewhere; the
    pass then disconnects the matched nodes.
    """

    def match(self, node: gs.Node) -> bool | Sequence[gs.Node]:
        raise NotImplementedError

    def replace(self, node: gs.Node, graph: gs.Graph) -> Sequence[gs.Node]:
        raise NotImplementedError


class PatternPass:
    """A pass that applies its patterns (first match wins) to every node once; a node
    that an earlier match took is not matched again."""

    def __init__(self, *patterns: Pattern) -> None:
        self.patterns = patterns

    def __call__(self, graph: gs.Graph) -> gs.Graph:
        taken: set[int] = set()
        for node in list(graph.nodes):
            if id(node) in taken:
                continue
            for pattern in self.patterns:
                matched = pattern.match(node)
                if matched:
                    break
            else:
                continue
            replacement = list(pattern.replace(node, graph))
            for old in [node] if matched is True else matched:
                old.inputs.clear()
                old.outputs.clear()
                taken.add(id(old))
            graph.nodes.extend(replacement)
        graph.cleanup().toposort()
        return graph


def compose(*passes: GraphPass) -> GraphPass:
    """One pass that runs ``passes`` in order."""
    def composed(graph: gs.Graph) -> gs.Graph:
        for graph_pass in passes:
            graph = graph_pass(graph)
        return graph
    return composed


def run_passes(model: onnx.ModelProto, *passes: GraphPass) -> onnx.ModelProto:
    """Apply ``passes`` in order to a model and return the rewritten model."""
    graph = compose(*passes)(gs.import_onnx(model))
    return gs.export_onnx(graph)
