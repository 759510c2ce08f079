"""The onnx-snn command line: round trip, JSON outputs, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import mlp_model
from onnx.reference import ReferenceEvaluator

from onnx_snn import HookFactory, convert
from onnx_snn.cli import main


@pytest.fixture
def files(tmp_path):
    """An ANN, calibration data and labelled test data on disk."""
    rng = np.random.default_rng(0)
    ann = mlp_model([8, 16, 16, 4], seed=2)
    onnx.save(ann, tmp_path / "ann.onnx")
    x = rng.normal(size=(250, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    logits = ReferenceEvaluator(ann).run(None, {"x": x})[0]
    np.savez(tmp_path / "test.npz", x=x[:60], y=logits[:60].argmax(axis=1))
    return tmp_path


def test_convert_then_eval_round_trip(files, capsys) -> None:
    snn, report = files / "snn.onnx", files / "report.json"
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "--mode", "99%", "--momentum", "0.2", "--batch-size", "64", "--no-progress",
                 "-o", str(snn), "--json", str(report)]) == 0
    onnx.checker.check_model(str(snn), full_check=True)
    layers = json.loads(report.read_text())["layers"]
    expected = convert(str(files / "ann.onnx"), str(files / "calib.npz"), batch_size=64,
                       hook_factory=HookFactory("99%", 0.2), progress=False).calibration
    assert [(e["node"], e["scale"]) for e in layers] == list(expected.scales.items())
    assert [e["node"] for e in layers] == ["relu0", "relu1"]

    result = files / "result.json"
    assert main(["eval", str(snn), "--data", str(files / "test.npz"), "--timesteps", "2,64",
                 "--ann", str(files / "ann.onnx"), "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    assert data["ann_accuracy"] == 1.0  # labels are the ANN's own predictions
    assert set(data["snn_accuracy"]) == {"2", "64"}
    assert data["snn_accuracy"]["64"] >= data["snn_accuracy"]["2"]
    assert data["snn_accuracy"]["64"] > 0.8
    out = capsys.readouterr().out
    assert "ANN accuracy: 1.0000" in out and "   64" in out


def test_saved_calibration_reconverts_identically(files) -> None:
    first, second = files / "a.onnx", files / "b.onnx"
    scales = files / "scales.json"
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "--v-reset", "0", "--v-threshold", "0.5", "-o", str(first),
                 "--save-calibration", str(scales), "--no-progress"]) == 0
    assert main(["convert", str(files / "ann.onnx"), "--load-calibration", str(scales),
                 "--v-reset", "0", "--v-threshold", "0.5", "-o", str(second)]) == 0
    assert onnx.load(first) == onnx.load(second)


@pytest.mark.parametrize("argv, message", [
    (["convert", "missing.onnx", "--calib", "{d}/calib.npz", "-o", "{d}/o.onnx"], "no such model"),
    (["convert", "{d}/ann.onnx", "--calib", "{d}/none.npz", "-o", "{d}/o.onnx"], "no such data"),
    (["convert", "{d}/ann.onnx", "--calib", "{d}/calib.npz", "-o", "{d}/ann.onnx"], "same as the"),
    (["convert", "{d}/ann.onnx", "--calib", "{d}/calib.npz", "-o", "{d}/no/o.onnx"],
     "does not exist"),
    (["convert", "{d}/ann.onnx", "--calib", "{d}/test.npz", "--exclude", "zz", "-o", "{d}/o.onnx"],
     "'zz'"),
    (["convert", "{d}/calib.npz", "--calib", "{d}/calib.npz", "-o", "{d}/o.onnx"],
     "not a valid ONNX"),
    (["eval", "{d}/ann.onnx", "--data", "{d}/test.npz"], "not a converted model"),
    # bad option values are bad usage: status 2
    (["convert", "{d}/ann.onnx", "--calib", "{d}/calib.npz", "--mode", "101%", "-o", "{d}/o.onnx"],
     "mode"),
    (["convert", "{d}/ann.onnx", "--calib", "{d}/calib.npz", "--momentum", "2", "-o", "{d}/o.onnx"],
     "momentum"),
])
def test_errors_are_one_line_with_status_1_or_2_for_usage(files, capsys, argv, message) -> None:
    argv = [a.format(d=files) for a in argv]
    assert main(argv) == (2 if message in ("mode", "momentum") else 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-snn: error:") and message in err[0]
    assert not (files / "o.onnx").exists()
    assert not list(files.glob(".*.tmp"))


def test_verbose_shows_the_traceback(files) -> None:
    with pytest.raises(Exception, match="no such model"):
        main(["convert", "missing.onnx", "--calib", str(files / "calib.npz"),
              "-o", str(files / "o.onnx"), "--verbose"])


@pytest.mark.parametrize("command", [[], ["convert"], ["eval"], ["demo"]])
def test_every_command_has_help(command) -> None:
    done = subprocess.run(["onnx-snn", *command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: onnx-snn" in done.stdout


def test_bad_usage_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "onnx_snn.cli", "eval", "m.onnx", "--data", "d",
                           "--timesteps", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_inspect_lists_activations_caveats_and_shapes(tmp_path, capsys) -> None:
    from conftest import make_model
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Sigmoid", ["p"], ["s"], name="gate"),
        helper.make_node("Clip", ["s", "lo", "hi"], ["y"], name="relu6"),
    ]
    ann = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
                     {"w": rng.normal(size=(3, 2, 3, 3)).astype(np.float32),
                      "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)})
    onnx.save(ann, tmp_path / "ann.onnx")
    report = tmp_path / "inspect.json"
    assert main(["inspect", str(tmp_path / "ann.onnx"), "--json", str(report)]) == 0
    captured = capsys.readouterr()
    assert "td       Sigmoid" in captured.out and "MaxPool      pool" in captured.out
    assert "2 neurons, 0 signed neurons, 1 time-difference ops, 1 per-step analog ops" \
        in captured.out
    data = json.loads(report.read_text())
    actions = {e["node"]: (e["op"], e["action"]) for e in data["ops"]}
    assert actions == {"conv": ("Conv", "analog"), "relu": ("Relu", "neuron"),
                       "pool": ("MaxPool", "per-step"), "gate": ("Sigmoid", "td"),
                       "relu6": ("Clip", "neuron")}
    assert [c["node"] for c in data["caveats"]] == ["pool"]
    assert data["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 2, 4, 4]}]
    assert data["spiking_inputs"][1] == {"name": "timesteps", "dtype": "int64", "shape": []}
    assert data["spiking_outputs"][0]["shape"] == ["T", "N", 3, 2, 2]
    assert main(["inspect", str(tmp_path / "ann.onnx"), "--maxpool", "before",
                 "--keep-analog"]) == 0
    out = capsys.readouterr().out
    assert "caveats" not in out and "per-step Sigmoid" in out


def test_outputs_get_ordinary_file_permissions(files) -> None:
    """Atomic writes go through mkstemp (mode 0600); the final files follow the umask."""
    import os

    umask = os.umask(0o022)
    try:
        assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                     "-o", str(files / "snn.onnx"), "--json", str(files / "r.json"),
                     "--no-progress"]) == 0
    finally:
        os.umask(umask)
    for name in ("snn.onnx", "r.json"):
        assert (files / name).stat().st_mode & 0o777 == 0o644


def test_convert_flags_for_the_accuracy_methods(files, capsys) -> None:
    snn = files / "best.onnx"
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "--preset", "best", "--bias-calibration", "4", "-o", str(snn),
                 "--json", str(files / "r.json"), "--no-progress"]) == 0
    model = onnx.load(snn)
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in model.graph.node if n.op_type == "IFNode"]
    assert [a["v_init"] for a in attrs] == [0.5, 0.5]
    assert len(json.loads((files / "r.json").read_text())["layers"][0]["scale"]) == 16
    assert any(n.name.endswith("__bias_shift") for n in model.graph.node)
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "--per-channel", "--mode", "99%", "--v-init", "0.25", "-o",
                 str(files / "pc.onnx"), "--no-progress"]) == 0
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in onnx.load(files / "pc.onnx").graph.node if n.op_type == "IFNode"]
    assert [a["v_init"] for a in attrs] == [0.25, 0.25]
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "--threshold-balancing", "--mode", "max", "-o", str(files / "x.onnx")]) == 2
    assert "--threshold-balancing" in capsys.readouterr().err
    assert not (files / "x.onnx").exists()


def test_eval_with_estimated_readout_delay(files, capsys) -> None:
    snn, result = files / "snn.onnx", files / "result.json"
    assert main(["convert", str(files / "ann.onnx"), "--calib", str(files / "calib.npz"),
                 "-o", str(snn), "--no-progress"]) == 0
    assert main(["eval", str(snn), "--data", str(files / "test.npz"), "--timesteps", "4,8",
                 "--ann", str(files / "ann.onnx"), "--readout-delay", "auto", "--calib",
                 str(files / "calib.npz"), "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    assert set(data["readout_delay"]) == {"4", "8"}
    assert all(0 <= d <= int(t) // 2 for t, d in data["readout_delay"].items())
    assert main(["eval", str(snn), "--data", str(files / "test.npz"), "--readout-delay",
                 "auto"]) == 1
    assert "needs --calib" in capsys.readouterr().err
