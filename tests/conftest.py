"""Shared helpers for the tests: small ONNX models built by hand, and the native library."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    """A checked model from helper nodes and numpy initializers {name: array}."""
    graph = helper.make_graph(
        nodes, "test", inputs, outputs,
        initializer=[numpy_helper.from_array(np.asarray(v), k)
                     for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def mlp_model(sizes: list[int], seed: int = 0, bias_shift: float = 0.1,
              opset: int = 17) -> onnx.ModelProto:
    """Gemm-Relu layers with a final Gemm; input 'x' [N, sizes[0]], output 'y'."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], {}, "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits[f"w{i}"] = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        inits[f"b{i}"] = (rng.normal(size=n_out) * 0.1 + bias_shift).astype(np.float32)
        last = i == len(sizes) - 2
        out = "y" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out], name=f"fc{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            current = f"r{i}"
    return make_model(nodes,
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])],
                      inits, opset)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (examples/ is not a package)."""
    module_name = f"onnx_snn_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def library() -> str:
    """The path of the loadable native kernel library. Tests that take it skip without
    one, unless ``ONNX_SNN_REQUIRE_NATIVE=1`` (set by ``.ci/run``) makes that a failure."""
    from onnx_snn.ops.native import native_status

    status = native_status()
    if not status.loadable:
        if os.environ.get("ONNX_SNN_REQUIRE_NATIVE") == "1":
            pytest.fail(f"native kernels required: {status.reason}")
        pytest.skip(status.reason)
    return str(status.library)
