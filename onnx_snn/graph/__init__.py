"""The ANN as a graph: preparing it, the op registry, names, graph building, rewrite
patterns, the activation and MaxPool policies, and what stops a conversion."""
