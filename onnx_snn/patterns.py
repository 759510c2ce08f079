"""A small, public graph-rewrite API on top of onnx-graphsurgeon.

A ``Pattern`` matches one node and builds the subgraph that replaces it. A
``PatternPass`` applies patterns to every matching node of a graph. Any callable
``graph -> graph`` is a pass, and ``run_passes`` composes passes over a model::

    class SwapMaxPool(Pattern):
        def match(self, node):
            return node.op == "MaxPool"

        def replace(self, node, graph):
            return [gs.Node("AveragePool", attrs=..., inputs=node.inputs,
                            outputs=node.outputs)]

    model = run_passes(model, PatternPass(SwapMaxPool()))

The built-in Relu -> spiking-neuron rewrite (``onnx_snn.spiking``) is one such
pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnx_graphsurgeon as gs

GraphPass = Callable[[gs.Graph], gs.Graph]


class Pattern:
    """Match a node; replace it with a subgraph.

    ``replace`` returns new nodes that read (some of) ``node.inputs`` and write
    every tensor in ``node.outputs``; the pass then disconnects ``node``.
    """

    def match(self, node: gs.Node) -> bool:
        raise NotImplementedError

    def replace(self, node: gs.Node, graph: gs.Graph) -> Sequence[gs.Node]:
        raise NotImplementedError


class PatternPass:
    """A pass that applies its patterns (first match wins) to every node once."""

    def __init__(self, *patterns: Pattern) -> None:
        self.patterns = patterns

    def __call__(self, graph: gs.Graph) -> gs.Graph:
        for node in list(graph.nodes):
            pattern = next((p for p in self.patterns if p.match(node)), None)
            if pattern is None:
                continue
            replacement = list(pattern.replace(node, graph))
            node.inputs.clear()
            node.outputs.clear()
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
