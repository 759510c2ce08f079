"""Hostile inputs through the command line, added to ``test_bad_inputs.py``'s battery:
special files as outputs, models users bring that cannot be converted, calibration
files and settings out of range, broken and mislabelled data, bad output choices and
time steps that no memory holds.

Every case must give a non-zero exit status (exactly 2 where it is bad usage), ONE
stderr line ``onnx-snn: error: ...`` naming the fault, no traceback, and leave every
file as it was: the folder's sha256 snapshot and the kinds of special files
(``hostile.py``). Cases that could crash the process run the real console script in
a subprocess, which must exit with a status, not die by a signal.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model, mlp_model
from hostile import (
    Needle,
    assert_one_line_error,
    assert_untouched,
    expect_error,
    run_script,
    snapshot,
)
from onnx import TensorProto, helper

from onnx_snn import OnnxSnnError, convert

SIZES = [8, 16, 16, 4]
DEV_NULL = Path("/dev/null")


# --------------------------------------------------------------------------- models and data

def x_data(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, SIZES[0])).astype(np.float32)


def info(name: str, shape: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def first_layer(extra_nodes: list, outputs: list, inits: dict | None = None,
                opset: int = 17) -> onnx.ModelProto:
    """x [N, 8] -> Gemm 'fc' -> Relu 'relu' -> r, then ``extra_nodes``."""
    rng = np.random.default_rng(4)
    weights = {"w": rng.normal(size=(8, 6)).astype(np.float32),
               "b": np.full(6, 0.3, np.float32), **(inits or {})}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"), *extra_nodes]
    return make_model(nodes, [info("x", ["N", 8])], outputs, weights, opset)


def relu_in_loop_body() -> onnx.ModelProto:
    """The Relu output goes through a Loop (one trip) whose body applies another Relu."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         helper.make_node("Relu", ["v"], ["v_out"], name="body_relu")], "body",
        [info("i", [], TensorProto.INT64), info("cond_in", [], TensorProto.BOOL),
         info("v", None)],
        [info("cond_out", [], TensorProto.BOOL), info("v_out", None)])
    loop = helper.make_node("Loop", ["trips", "go", "r"], ["y"], name="loop", body=body)
    return first_layer([loop], [info("y", ["N", 6])],
                       {"trips": np.array(1, np.int64), "go": np.array(True)})


def if_on_spikes() -> onnx.ModelProto:
    """The Relu output decides an If: its sum > 0 picks one branch."""
    then_branch = helper.make_graph([helper.make_node("Identity", ["r"], ["t"], name="then")],
                                    "then", [], [info("t", None)])
    else_branch = helper.make_graph([helper.make_node("Neg", ["r"], ["e"], name="else")],
                                    "else", [], [info("e", None)])
    nodes = [helper.make_node("ReduceSum", ["r"], ["total"], name="total", keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["cond"], name="positive"),
             helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_branch,
                              else_branch=else_branch)]
    return first_layer(nodes, [info("y", ["N", 6])], {"zero": np.array(0.0, np.float32)})


def scalar_output() -> onnx.ModelProto:
    """The Relu output summed over everything: a scalar, no batch axis."""
    return first_layer([helper.make_node("ReduceSum", ["r"], ["y"], name="total", keepdims=0)],
                       [info("y", [])])


def constant_output() -> onnx.ModelProto:
    """A second output that is a constant: no input reaches it."""
    model = mlp_model(SIZES, seed=2)
    model.graph.node.append(helper.make_node("Constant", [], ["c"], name="const",
                                             value=helper.make_tensor("c", TensorProto.FLOAT,
                                                                      [3], [1, 2, 3])))
    model.graph.output.append(info("c", [3]))
    return model


def gather_that_fails_at_run_time() -> onnx.ModelProto:
    """x's argmax indexes a table of 2 rows: a valid graph, but onnxruntime fails on any
    sample whose largest feature is not among the first two."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("ArgMax", ["x"], ["index"], name="argmax", axis=1, keepdims=0),
             helper.make_node("Gather", ["table", "index"], ["rows"], name="lookup", axis=0),
             helper.make_node("Gemm", ["rows", "w", "b"], ["h"], name="fc"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    return make_model(nodes, [info("x", ["N", 8])], [info("y", ["N", 6])],
                      {"table": np.ones((2, 8), np.float32),
                       "w": rng.normal(size=(8, 6)).astype(np.float32),
                       "b": np.full(6, 0.3, np.float32)})


def written_twice() -> onnx.ModelProto:
    model = mlp_model(SIZES, seed=2)
    model.graph.node[0].output[0] = "h1"  # fc0 now writes what fc1 writes
    return model


def cyclic() -> onnx.ModelProto:
    model = mlp_model(SIZES, seed=2)
    model.graph.node[0].input[0] = "r1"  # fc0 reads relu1's output, downstream of fc0
    return model


def no_relu_with_sigmoid() -> onnx.ModelProto:
    weight = np.ones((8, 4), np.float32)
    return make_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                       helper.make_node("Sigmoid", ["h"], ["y"], name="gate")],
                      [info("x", ["N", 8])], [info("y", ["N", 4])], {"w": weight})


def integer_input() -> onnx.ModelProto:
    """x int64 [N, 8] -> Cast -> the standard MLP."""
    model = mlp_model(SIZES, seed=2)
    graph = model.graph
    graph.node.insert(0, helper.make_node("Cast", ["x_int"], ["x"], name="cast",
                                          to=TensorProto.FLOAT))
    del graph.input[:]
    graph.input.append(info("x_int", ["N", 8], TensorProto.INT64))
    onnx.checker.check_model(model)
    return model


def two_inputs() -> onnx.ModelProto:
    weight = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    return make_model([helper.make_node("Concat", ["a", "b"], ["ab"], name="cat", axis=1),
                       helper.make_node("MatMul", ["ab", "w"], ["h"], name="mm"),
                       helper.make_node("Relu", ["h"], ["r"], name="relu"),
                       helper.make_node("MatMul", ["r", "w2"], ["y"], name="out")],
                      [info("a", ["N", 3]), info("b", ["N", 2])], [info("y", ["N", 3])],
                      {"w": weight, "w2": np.eye(4, 3, dtype=np.float32)})


def calibration_json(scale, node: str = "relu0") -> dict:
    return {"batches": 1, "samples": 10, "layers": [
        {"node": node, "scale": scale, "mode": "Max", "momentum": 0.1},
        {"node": "relu1", "scale": 1.0, "mode": "Max", "momentum": 0.1}]}


def lying_npz(path: Path, rows_claimed: int) -> None:
    """An .npz whose 'x' header claims ``rows_claimed`` rows but holds 10."""
    np.savez(path, x=x_data(10), y=np.zeros(10, np.int64))
    import zipfile
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["x.npy"] = members["x.npy"].replace(b"(10, 8)", f"({rows_claimed}, 8)".encode(), 1)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def converted() -> dict[str, bytes]:
    """Serialized converted models of the standard MLP: plain, and with spike counts."""
    ann, calib = mlp_model(SIZES, seed=2), x_data(200)
    return {"snn": convert(ann, calib, progress=False).model.SerializeToString(),
            "counts": convert(ann, calib, spike_counts=True,
                              progress=False).model.SerializeToString(),
            "streaming": convert(ann, calib, format="streaming",
                                 progress=False).model.SerializeToString()}


@pytest.fixture
def work(tmp_path: Path, converted: dict[str, bytes]) -> Path:
    onnx.save(mlp_model(SIZES, seed=2), tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x_data(200))
    np.savez(tmp_path / "test.npz", x=x_data(60, 1), y=np.arange(60) % 4)
    for name, data in converted.items():
        (tmp_path / f"{name}.onnx").write_bytes(data)
    return tmp_path


def convert_argv(d: Path, model: str = "ann.onnx", *extra) -> list:
    return ["convert", d / model, "--calib", d / "calib.npz", "-o", d / "out.onnx",
            "--no-progress", *extra]


def eval_argv(d: Path, data: str = "test.npz", *extra, model: str = "snn.onnx") -> list:
    return ["eval", d / model, "--data", d / data, "--timesteps", "2,4", *extra]


def report_argv(d: Path, data: str = "test.npz", *extra, model: str = "snn.onnx") -> list:
    return ["report", d / model, "--data", d / data, "--timesteps", "4", "-o", d / "rep",
            *extra]


# --------------------------------------------------------------------------- the cases
# Each case prepares its input in the folder and returns (argv, needles, status): status
# 2 for bad usage, None for 1 (an error). ``SUBPROCESS`` cases run the real script.

Case = Callable[[Path], "tuple[list, list[Needle], int | None]"]
CASES: dict[str, Case] = {}
SUBPROCESS: set[str] = set()


def case(name: str, subprocess: bool = False) -> Callable[[Case], Case]:
    def register(function: Case) -> Case:
        CASES[name] = function
        if subprocess:
            SUBPROCESS.add(name)
        return function
    return register


# ---- outputs that are not regular files, or clash

@case("output-is-a-folder")
def _(d):
    (d / "folder.onnx").mkdir()
    return ["convert", d / "ann.onnx", "--calib", d / "calib.npz", "-o", d / "folder.onnx"], \
        ["folder.onnx", "folder"], None


@case("json-is-a-folder")
def _(d):
    (d / "r.json").mkdir()
    return convert_argv(d, "ann.onnx", "--json", d / "r.json"), ["r.json", "folder"], None


@case("output-is-a-socket")
def _(d):
    path = d / "sock.onnx"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    return ["convert", d / "ann.onnx", "--calib", d / "calib.npz", "-o", path], \
        ["sock.onnx", "socket"], None


@case("failed-convert-leaves-a-fifo-output-a-fifo")
def _(d):
    os.mkfifo(d / "pipe.onnx")
    np.savez(d / "narrow.npz", x=x_data(20)[:, :5])
    return ["convert", d / "ann.onnx", "--calib", d / "narrow.npz", "-o", d / "pipe.onnx",
            "--no-progress"], ["'x'", "[N, 8]"], None


@case("failed-eval-leaves-dev-null-a-device")
def _(d):
    return eval_argv(d, "missing.npz", "--json", DEV_NULL), ["missing.npz"], None


@case("save-calibration-is-the-output")
def _(d):
    return convert_argv(d, "ann.onnx", "--save-calibration", d / "out.onnx"), \
        ["out.onnx"], None


@case("json-is-the-saved-calibration")
def _(d):
    return convert_argv(d, "ann.onnx", "--save-calibration", d / "s.json", "--json",
                        d / "s.json"), ["s.json"], None


@case("report-folder-holds-other-files")
def _(d):
    (d / "rep").mkdir()
    (d / "rep" / "notes.txt").write_text("mine\n")
    return report_argv(d), ["rep", "notes.txt"], None


@case("report-folder-is-a-file")
def _(d):
    (d / "rep").write_text("a file\n")
    return report_argv(d), ["rep", "not a folder"], None


@case("report-json-is-the-model")
def _(d):
    return report_argv(d, "test.npz", "--json", d / "snn.onnx"), ["snn.onnx"], None


# ---- models that cannot be converted, or are the wrong kind

def _model_case(name: str, build: Callable[[], onnx.ModelProto], needles: list[Needle],
                command: str = "convert") -> None:
    @case(f"{command}-{name}")
    def _(d):
        onnx.save(build(), d / f"{name}.onnx")
        argv = convert_argv(d, f"{name}.onnx") if command == "convert" else \
            ["inspect", d / f"{name}.onnx"]
        return argv, needles, None


for _command in ("convert", "inspect"):
    _model_case("relu-in-loop-body", relu_in_loop_body, ["'body_relu'", "Loop 'loop'"],
                _command)
    _model_case("if-on-spikes", if_on_spikes, ["If 'branch'", "condition"], _command)
    _model_case("scalar-output", scalar_output, ["'y'", "batch"], _command)
    _model_case("written-twice", written_twice, ["'h1'", "twice"], _command)
    _model_case("cyclic", cyclic, ["cycle", "'fc0'"], _command)
    _model_case("constant-output", constant_output, ["'c'", "does not depend on the input"],
                _command)


@case("inspect-keep-analog-without-relu")
def _(d):
    onnx.save(no_relu_with_sigmoid(), d / "gate.onnx")
    return ["inspect", d / "gate.onnx", "--keep-analog"], ["convert would stop", "no Relu"], \
        None


@case("convert-keep-analog-without-relu")
def _(d):
    onnx.save(no_relu_with_sigmoid(), d / "gate.onnx")
    return convert_argv(d, "gate.onnx", "--keep-analog"), ["no Relu"], None


@case("convert-an-snn")
def _(d):
    return convert_argv(d, "snn.onnx"), ["snn.onnx", "already a spiking model"], None


@case("inspect-an-snn")
def _(d):
    return ["inspect", d / "snn.onnx"], ["snn.onnx", "already a spiking model"], None


@case("report-on-the-ann")
def _(d):
    return report_argv(d, model="ann.onnx"), ["not a converted model"], None


@case("eval-model-is-a-folder")
def _(d):
    (d / "model.onnx").mkdir()
    return eval_argv(d, model="model.onnx"), ["model.onnx"], None


@case("report-ann-is-another-model")
def _(d):
    onnx.save(two_inputs(), d / "other.onnx")
    return report_argv(d, "test.npz", "--ann", d / "other.onnx"), \
        ["other.onnx", "'r0'", "converted from"], None


@case("onnxruntime-fails-during-calibration", subprocess=True)
def _(d):
    """onnxruntime's own log lines must not reach stderr before the one error line."""
    onnx.save(gather_that_fails_at_run_time(), d / "gather.onnx")
    return convert_argv(d, "gather.onnx"), ["onnxruntime failed", "calibration data, batch 0",
                                            "lookup"], None


# ---- calibration files

def _calibration_case(name: str, scale, needles: list[Needle], node: str = "relu0") -> None:
    @case(f"calibration-{name}")
    def _(d):
        (d / "scales.json").write_text(json.dumps(calibration_json(scale, node)))
        return ["convert", d / "ann.onnx", "--load-calibration", d / "scales.json", "-o",
                d / "out.onnx"], needles, None


_calibration_case("empty-scale-list", [], ["'relu0'", "non-empty list"])
_calibration_case("scale-1e300", 1e300, ["'relu0'", "float32"])
_calibration_case("scale-1e-300", 1e-300, ["'relu0'", "float32"])
_calibration_case("scale-negative", -2.0, ["'relu0'", "> 0"])
_calibration_case("scale-nan", float("nan"), ["'relu0'", "finite"])
_calibration_case("per-channel-too-short", [1.0, 2.0, 3.0], ["'relu0'", "3 per-channel"])
_calibration_case("per-channel-too-long", [1.0] * 17, ["'relu0'", "17 per-channel"])
_calibration_case("scale-is-text", "big", ["'relu0'", "number"])
_calibration_case("scales-of-another-model", 1.0, ["'relu0'"], node="conv_relu_7")


@case("calibration-layers-not-a-list")
def _(d):
    (d / "scales.json").write_text(json.dumps({"layers": {"relu0": 1.0}}))
    return ["convert", d / "ann.onnx", "--load-calibration", d / "scales.json", "-o",
            d / "out.onnx"], ["scales.json", "not a calibration file"], None


@case("calibration-is-a-folder")
def _(d):
    (d / "scales.json").mkdir()
    return ["convert", d / "ann.onnx", "--load-calibration", d / "scales.json", "-o",
            d / "out.onnx"], ["scales.json"], None


# ---- settings out of range: bad usage, status 2

def _setting_case(name: str, extra: list[str], needles: list[Needle],
                  command: str = "convert") -> None:
    @case(f"{command}-{name}")
    def _(d):
        argv = {"convert": convert_argv(d, "ann.onnx"), "eval": eval_argv(d),
                "report": report_argv(d)}[command]
        if command == "eval" and "--timesteps" in extra:
            argv = argv[:-2]  # drop the default "--timesteps 2,4"
        if command == "report" and "--timesteps" in extra:
            argv = [a for i, a in enumerate(argv) if a != "--timesteps" and
                    not (i and argv[i - 1] == "--timesteps")]
        return [*argv, *extra], needles, 2


_setting_case("v-init-100", ["--v-init", "100"], ["v_init", "100"])
_setting_case("v-init-negative", ["--v-init", "-0.5"], ["v_init", "-0.5"])
_setting_case("v-init-nan", ["--v-init", "nan"], ["nan"])
_setting_case("v-threshold-denormal", ["--v-threshold", "1e-45"], ["v_threshold", "1e-45"])
_setting_case("v-threshold-overflows-float32", ["--v-threshold", "1e39"],
              ["v_threshold", "1e+39"])
_setting_case("v-threshold-zero", ["--v-threshold", "0"], ["v_threshold"])
_setting_case("v-threshold-negative", ["--v-threshold", "-1"], ["v_threshold", "-1"])
_setting_case("v-reset-nan", ["--v-reset", "nan"], ["reset", "nan"])
_setting_case("v-reset-inf", ["--v-reset", "inf"], ["reset", "inf"])
_setting_case("momentum-inf", ["--momentum", "inf"], ["momentum", "inf"])
_setting_case("batch-size-text", ["--batch-size", "ten"], ["batch size", "'ten'"])
_setting_case("bias-calibration-zero", ["--bias-calibration", "0"], ["bias calibration"])
_setting_case("format-unknown", ["--format", "tflite"], ["--format", "tflite"])
_setting_case("preset-unknown", ["--preset", "fastest"], ["--preset", "fastest"])
_setting_case("maxpool-unknown", ["--maxpool", "min"], ["--maxpool", "min"])
_setting_case("per-channel-with-threshold-balancing-mode",
              ["--threshold-balancing", "--momentum", "0.5"], ["--threshold-balancing"])
_setting_case("timesteps-beyond-int64", ["--timesteps", "99999999999999999999"],
              ["99999999999999999999", "int64"], "eval")
_setting_case("timesteps-not-numbers", ["--timesteps", "4,eight"], ["4,eight"], "eval")
_setting_case("readout-delay-negative", ["--readout-delay", "-1"], ["readout delay"], "eval")
_setting_case("readout-delay-not-below-t", ["--readout-delay", "4"],
              ["readout delay 4", "T = 2"], "eval")
_setting_case("precision-unknown", ["--precision", "fp8"], ["--precision", "fp8"], "report")
_setting_case("report-two-timesteps", ["--timesteps", "4,8"], ["one T"], "report")


# ---- data

@case("eval-data-is-npy")
def _(d):
    np.save(d / "test.npy", x_data(10))
    return eval_argv(d, "test.npy"), ["test.npy", "not an .npz", "numpy.savez"], None


@case("convert-calib-is-npy")
def _(d):
    np.save(d / "calib.npy", x_data(10))
    return ["convert", d / "ann.onnx", "--calib", d / "calib.npy", "-o", d / "out.onnx"], \
        ["calib.npy", "not an .npz"], None


@case("eval-header-claims-more-rows")
def _(d):
    lying_npz(d / "lying.npz", 100000)
    return eval_argv(d, "lying.npz"), ["lying.npz", "'x'", "100000"], None


@case("convert-header-claims-more-rows")
def _(d):
    lying_npz(d / "lying.npz", 2**40)
    return ["convert", d / "ann.onnx", "--calib", d / "lying.npz", "-o", d / "out.onnx"], \
        ["lying.npz", "'x'"], None


@case("eval-labels-negative")
def _(d):
    np.savez(d / "neg.npz", x=x_data(12), y=np.array([0, 1, 2, -1] * 3))
    return eval_argv(d, "neg.npz"), ["label -1", "sample 3", "0..3"], None


@case("eval-labels-beyond-the-classes")
def _(d):
    np.savez(d / "big.npz", x=x_data(12), y=np.arange(12))
    return eval_argv(d, "big.npz"), ["label 4", "sample 4", "4 classes"], None


@case("report-labels-beyond-the-classes")
def _(d):
    np.savez(d / "big.npz", x=x_data(12), y=np.arange(12))
    return report_argv(d, "big.npz"), ["label 4", "sample 4"], None


@case("eval-labels-fewer-than-samples")
def _(d):
    np.savez(d / "short.npz", x=x_data(12), y=np.zeros(11, np.int64))
    return eval_argv(d, "short.npz"), ["short.npz", "11", "12"], None


@case("eval-labels-two-columns")
def _(d):
    np.savez(d / "wide.npz", x=x_data(12), y=np.zeros((12, 2), np.int64))
    return eval_argv(d, "wide.npz"), ["labels", "[12, 2]"], None


@case("eval-two-input-data-misses-one")
def _(d):
    snn = convert(two_inputs(), {"a": x_data(50)[:, :3], "b": x_data(50)[:, 3:5]},
                  progress=False)
    snn.save(d / "two.onnx")
    np.savez(d / "only_a.npz", a=x_data(10)[:, :3], y=np.zeros(10, np.int64))
    return eval_argv(d, "only_a.npz", model="two.onnx"), ["only_a.npz", "'b'"], None


@case("convert-integer-input-nan")
def _(d):
    onnx.save(integer_input(), d / "int.onnx")
    x = np.round(x_data(20) * 10)
    x[3, 3] = np.nan
    np.savez(d / "int_calib.npz", x=x)
    return ["convert", d / "int.onnx", "--calib", d / "int_calib.npz", "-o", d / "out.onnx"], \
        ["'x_int'", "NaN", "integer"], None


@case("convert-integer-input-fractions")
def _(d):
    onnx.save(integer_input(), d / "int.onnx")
    np.savez(d / "int_calib.npz", x=x_data(20))
    return ["convert", d / "int.onnx", "--calib", d / "int_calib.npz", "-o", d / "out.onnx"], \
        ["'x_int'", "fractions"], None


@case("calib-is-a-folder")
def _(d):
    (d / "data.npz").mkdir()
    return ["convert", d / "ann.onnx", "--calib", d / "data.npz", "-o", d / "out.onnx"], \
        ["data.npz"], None


# ---- the scored output

@case("eval-output-unknown")
def _(d):
    return eval_argv(d, "test.npz", "--output", "logits"), ["'logits'", "'y'"], None


@case("eval-output-is-a-spike-count")
def _(d):
    return eval_argv(d, "test.npz", "--output", "relu0__spike_count", model="counts.onnx"), \
        ["'relu0__spike_count'", "cannot be scored"], None


@case("report-output-unknown")
def _(d):
    return report_argv(d, "test.npz", "--output", "logits"), ["'logits'"], None


# ---- time steps that no memory holds (run in a subprocess: a crash must not pass)

@case("eval-timesteps-beyond-memory", subprocess=True)
def _(d):
    return eval_argv(d)[:-2] + ["--timesteps", "4611686018427387904"], \
        ["T = 4611686018427387904", "bytes"], None


@case("eval-streaming-timesteps-beyond-memory", subprocess=True)
def _(d):
    return eval_argv(d, model="streaming.onnx")[:-2] + ["--timesteps", "2305843009213693952"], \
        ["T = 2305843009213693952", "bytes"], None


@case("report-timesteps-beyond-memory", subprocess=True)
def _(d):
    argv = report_argv(d)
    argv[argv.index("--timesteps") + 1] = "4611686018427387904"
    return argv, ["T = 4611686018427387904", "bytes"], None


@case("eval-memory-limit-not-a-size")
def _(d):
    return eval_argv(d) + ["--memory-limit", "lots"], ["memory limit", "'lots'"], 2


@case("eval-memory-limit-zero")
def _(d):
    return eval_argv(d) + ["--memory-limit", "0"], ["memory limit", "'0'"], 2


@case("eval-memory-limit-below-the-outputs", subprocess=True)
def _(d):
    return eval_argv(d) + ["--memory-limit", "10"], ["bytes of outputs", "budget of 10 bytes"], \
        None


@case("convert-bias-calibration-memory-limit-below-one-step", subprocess=True)
def _(d):
    return convert_argv(d, "ann.onnx", "--bias-calibration", "8", "--memory-limit", "100"), \
        ["bytes", "budget"], None


def test_more_than_100_hostile_cases_in_all() -> None:
    from test_bad_inputs import CASES as EARLIER
    assert len(CASES) + len(EARLIER) >= 100, (len(CASES), len(EARLIER))


@pytest.mark.parametrize("name", sorted(set(CASES) - SUBPROCESS))
def test_hostile_input_gives_one_line_error(name: str, work: Path, capsys) -> None:
    argv, needles, status = CASES[name](work)
    expect_error(argv, capsys, [work, DEV_NULL], needles, status or 1)


@pytest.mark.parametrize("name", sorted(SUBPROCESS))
def test_hostile_input_in_the_console_script(name: str, work: Path) -> None:
    argv, needles, _ = CASES[name](work)
    before = snapshot(work)
    done = run_script(argv, work)
    assert done.returncode > 0, f"status {done.returncode} (negative: died by a signal)"
    assert_one_line_error(done.stderr, needles)
    assert_untouched(before, snapshot(work))


@pytest.mark.parametrize("name", ["convert-relu-in-loop-body", "calibration-scale-1e300",
                                  "convert-v-init-100", "eval-labels-negative"])
def test_console_script_agrees_with_main(name: str, work: Path) -> None:
    """The same cases through the installed script: exit status, one line, no traceback."""
    argv, needles, status = CASES[name](work)
    done = run_script(argv, work)
    assert done.returncode == (status or 1), done.stderr
    assert_one_line_error(done.stderr, needles)


def test_the_memory_error_states_the_bytes(work: Path, capsys) -> None:
    """A run whose outputs alone exceed memory: T·N·outputs·4 bytes, by hand: the MLP
    gives 4 class scores per sample and step, the data 60 samples in one batch of 256.
    (Working memory no longer limits T: longer runs go in chunks of steps.)"""
    t = 4611686018427387904
    line = expect_error(eval_argv(work)[:-2] + ["--timesteps", str(t)], capsys, [work],
                        ["bytes"])
    assert f"T = {t} keeps {t * 60 * 4 * 4:,} bytes of outputs for 60 samples" in line


# --------------------------------------------------------------------------- Python API misuse

API_MISUSE = {
    "per-channel-not-a-bool": (lambda: __import__("onnx_snn").HookFactory(per_channel="no"),
                               "per_channel"),
    "negative-eps": (lambda: __import__("onnx_snn.calibration").calibration
                     .BalancingHookFactory(eps=-1), "eps"),
    "neuron-kwarg-unknown": (lambda: __import__("onnx_snn").NeuronFactory(decay=0.9),
                             "decay"),
    "neuron-type-not-callable": (lambda: __import__("onnx_snn").NeuronFactory(neuron_type=3),
                                 "neuron_type"),
    "model-is-a-number": (lambda: convert(42, x_data(10)), "model path"),
    "data-is-a-number": (lambda: convert(mlp_model(SIZES, seed=2), 42, progress=False),
                         "unsupported data"),
    "exclude-is-a-string": (lambda: convert(mlp_model(SIZES, seed=2), x_data(10),
                                            exclude="relu0"), "exclude"),
    "keep-analog-is-text": (lambda: convert(mlp_model(SIZES, seed=2), x_data(10),
                                            keep_analog="yes"), "keep_analog"),
    "hook-factory-is-a-string": (lambda: convert(mlp_model(SIZES, seed=2), x_data(10),
                                                 hook_factory="max"), "hook_factory"),
    "bias-calibration-is-a-float": (lambda: convert(mlp_model(SIZES, seed=2), x_data(10),
                                                    bias_calibration=2.5), "bias calibration"),
    "batch-size-is-text": (lambda: convert(mlp_model(SIZES, seed=2), x_data(10),
                                           batch_size="10"), "batch size"),
    "calibration-is-a-dict": (lambda: convert(mlp_model(SIZES, seed=2),
                                              calibration={"relu0": 1.0}), "Calibration"),
}


@pytest.mark.parametrize("name", list(API_MISUSE))
def test_python_api_misuse_raises_one_clear_error(name: str) -> None:
    """Each used to raise a raw TypeError or AttributeError, or be accepted."""
    call, needle = API_MISUSE[name]
    with pytest.raises(OnnxSnnError, match=re.escape(needle)):
        call()
