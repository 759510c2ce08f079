"""Fresh names for what the passes add to a graph.

Every node and tensor a pass creates gets a name no part of the model uses yet,
subgraphs included, so a model whose own names look like generated ones (a
tensor called ``timesteps``, a node called ``relu0__output_scaler``) still
converts into a valid graph.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_graphsurgeon as gs


def graph_names(graph: gs.Graph) -> set[str]:
    """Every node and tensor name of ``graph`` and of the subgraphs its nodes hold."""
    names: set[str] = set()
    pending = [graph]
    while pending:
        current = pending.pop()
        names.update(current.tensors().keys())
        for node in current.nodes:
            names.add(node.name)
            pending.extend(value for value in node.attrs.values() if isinstance(value, gs.Graph))
    names.discard("")
    return names


class NameScope:
    """Hands out names that are not taken, and prefixes that no taken name starts with.

    What it hands out is taken from then on. Names made from a handed-out prefix
    are not known to the scope, so whoever makes them registers them (``take``)
    when later names could meet them; ``GraphBuilder`` does.
    """

    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken)
        self.prefixes: set[str] = set()

    @classmethod
    def of(cls, graph: gs.Graph) -> NameScope:
        return cls(graph_names(graph))

    def take(self, name: str) -> str:
        self.taken.add(name)
        return name

    def name(self, base: str) -> str:
        """``base``, or ``base_<k>`` with the smallest free k."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        return self.take(name)

    def prefix(self, base: str) -> str:
        """``base`` if no taken name or other prefix starts with it (nor it with another
        prefix), else ``base`` with a number k before its trailing underscores (a
        candidate must not start with ``base``, or it would meet the same prefixes)."""
        stem = base.rstrip("_")
        tail = base[len(stem):]
        prefix, k = base, 1
        while any(name.startswith(prefix) for name in self.taken) \
                or any(prefix.startswith(p) or p.startswith(prefix) for p in self.prefixes):
            prefix, k = f"{stem}{k}{tail}", k + 1
        self.prefixes.add(prefix)
        return prefix
