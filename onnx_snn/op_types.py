"""What onnx-snn knows about ONNX op types, in one place."""

from __future__ import annotations

#: Layers with a weight (input 1) whose MACs the cost model counts and into which
#: an output scale can fold.
WEIGHTED = frozenset({"Conv", "Gemm", "MatMul"})
#: Ops whose output is a shape, not data.
SHAPE_OPS = frozenset({"Shape", "Size"})
#: Op domains of the ONNX standard (None and "" are the default domain).
STANDARD_DOMAINS = frozenset({None, "", "ai.onnx"})
#: Control-flow ops: they hold subgraphs.
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
