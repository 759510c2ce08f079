"""A model is written only once it loads: the ONNX checker and plain onnxruntime (no
custom op library) must both accept the staged file, or nothing is written."""

from __future__ import annotations

import onnxruntime as ort
import pytest
from conftest import mlp_model
from onnx import helper

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.models import save_model


def test_a_model_onnxruntime_refuses_is_not_written(tmp_path) -> None:
    model = mlp_model([4, 3, 2])
    clash = helper.make_node("Relu", ["x"], [model.graph.node[0].output[0]], name="clash")
    model.graph.node.append(clash)  # a tensor written twice: not a valid graph
    target = tmp_path / "broken.onnx"
    with pytest.raises(OnnxSnnError, match="would not load in onnxruntime, so nothing was "
                                           "written") as error:
        save_model(model, target)
    assert str(target) in str(error.value)
    assert error.value.__cause__ is not None  # --verbose shows the loader's own error
    assert list(tmp_path.iterdir()) == []  # no file, no staging leftovers


def test_a_valid_model_is_written_and_loads(tmp_path) -> None:
    target = save_model(mlp_model([4, 3, 2]), tmp_path / "ok.onnx")
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
