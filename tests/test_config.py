"""One ConversionConfig for convert(), the presets and the command line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import mlp_model
from onnx import helper

from onnx_snn import PRESETS, ConversionConfig, HookFactory, OnnxSnnError, VoltageHook, convert
from onnx_snn.cli import main


def x_data(rows: int = 60) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32)


def neuron_attributes(model: onnx.ModelProto) -> list[dict]:
    return [{a.name: helper.get_attribute_value(a) for a in node.attribute}
            for node in model.graph.node if node.op_type == "IFNode"]


def test_a_preset_is_a_config() -> None:
    ann = mlp_model([8, 16, 16, 4], seed=2)
    by_name = convert(ann, x_data(), preset="best", progress=False).model
    by_config = convert(ann, x_data(), PRESETS["best"], progress=False).model
    assert by_name.SerializeToString() == by_config.SerializeToString()
    assert [a["v_init"] for a in neuron_attributes(by_name)] == [0.5, 0.5]


def test_keywords_replace_the_config_values() -> None:
    config = ConversionConfig(batch_size=20, spike_counts=True)
    result = convert(mlp_model([8, 16, 16, 4], seed=2), x_data(), config, batch_size=30,
                     progress=False)
    assert result.calibration.batches == 2  # 60 samples in batches of 30, not 20
    assert any(o.name.endswith("__spike_count") for o in result.model.graph.output)


@pytest.mark.parametrize("settings, needle", [
    ({"batch_size": 0}, "batch size"), ({"maxpool": "min"}, "MaxPool policy"),
    ({"format": "tflite"}, "format"), ({"keep_analog": "yes"}, "keep_analog"),
    ({"exclude": "relu0"}, "exclude"), ({"hook_factory": "max"}, "hook_factory"),
])
def test_a_config_checks_its_values_when_made(settings, needle) -> None:
    with pytest.raises(OnnxSnnError, match=needle):
        ConversionConfig(**settings)


def test_unknown_settings_and_mixed_choices_are_refused() -> None:
    with pytest.raises(OnnxSnnError, match="unknown conversion setting 'batchsize'"):
        convert(mlp_model([8, 4]), x_data(), batchsize=10)
    with pytest.raises(OnnxSnnError, match="config or a preset"):
        convert(mlp_model([8, 4]), x_data(), ConversionConfig(), preset="best")


def test_collector_with_args_is_a_hook_factory() -> None:
    """torch.ao's observer style: ``VoltageHook.with_args(...)`` makes the same hooks as
    ``HookFactory(...)``."""
    ann, x = mlp_model([8, 16, 16, 4], seed=2), x_data()
    a = convert(ann, x, hook_factory=VoltageHook.with_args(mode="99%", momentum=0.2),
                batch_size=20, progress=False)
    b = convert(ann, x, hook_factory=HookFactory("99%", 0.2), batch_size=20, progress=False)
    assert a.calibration.scales == b.calibration.scales


def test_the_command_line_starts_from_the_preset(tmp_path) -> None:
    """``--preset best --v-threshold 2`` keeps the preset's half-threshold start."""
    onnx.save(mlp_model([8, 16, 16, 4], seed=2), tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x_data())
    assert main(["convert", str(tmp_path / "ann.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "--preset", "best", "--v-threshold", "2", "-o", str(tmp_path / "snn.onnx"),
                 "--no-progress"]) == 0
    attributes = neuron_attributes(onnx.load(tmp_path / "snn.onnx"))
    assert [(a["v_threshold"], a["v_init"]) for a in attributes] == [(2.0, 0.5), (2.0, 0.5)]
