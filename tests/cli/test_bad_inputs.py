"""Bad inputs, one by one: each gives ONE line ``onnx-snn: error: ...`` on stderr that
names the thing at fault (file, tensor, node, the bad value), a non-zero exit status, no
traceback without --verbose, no output or temporary file, and input files left as they
were (the checks are in ``hostile.py``). The Python API raises ``OnnxSnnError`` with the
same kind of message.

Most cases drive ``onnx_snn.cli.main`` in-process; a few run the real ``onnx-snn`` script
in a subprocess to check the exit status and that stderr holds no "Traceback".
``test_cli.py`` already covers a missing model or data file, output == input spelled the
same way, an output in a missing directory via -o, ``--mode 101%``, ``--momentum 2``, an
unknown ``--exclude`` and an .npz given as the model to ``convert``; none is repeated.
``test_hostile.py`` holds the cases added since (special files, models users bring,
settings, data).
"""

from __future__ import annotations

import re
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
    run_main,
    run_script,
    snapshot,
)
from onnx import TensorProto, helper, numpy_helper

import onnx_snn.io.models
from onnx_snn import OnnxSnnError, SpikingSession, convert, run_snn
from onnx_snn.calibration import Calibration, LayerCalibration
from onnx_snn.measure.evaluation import snn_accuracy

PROC_OUTPUT = Path("/proc/onnx_snn_out.onnx")


def proc_is_writable() -> bool:
    try:
        with open(PROC_OUTPUT, "wb"):
            pass
    except OSError:
        return False
    PROC_OUTPUT.unlink(missing_ok=True)
    return True


needs_read_only_proc = pytest.mark.skipif(
    not Path("/proc").is_dir() or proc_is_writable(),
    reason="needs a directory that even root cannot write into (/proc on Linux)")


# --------------------------------------------------------------------------- models and data

def two_input_model() -> onnx.ModelProto:
    """a [N, 3], b [N, 2] -> Concat -> MatMul -> Relu 'r' -> y [N, 4]."""
    weight = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    return make_model([helper.make_node("Concat", ["a", "b"], ["ab"], name="cat", axis=1),
                       helper.make_node("MatMul", ["ab", "w"], ["h"], name="mm"),
                       helper.make_node("Relu", ["h"], ["y"], name="r")],
                      [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
                       helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      {"w": weight})


def no_relu_model() -> onnx.ModelProto:
    """x [N, 8] -> MatMul -> y [N, 4]: nothing to convert."""
    return make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      {"w": np.ones((8, 4), np.float32)})


def custom_op_model(with_function: bool = False) -> onnx.ModelProto:
    """x [N, 8] -> Gemm 'fc0' -> com.example::Bar 'bar0' -> Relu 'relu0' -> y [N, 4]."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0"),
         helper.make_node("Bar", ["h"], ["hb"], name="bar0", domain="com.example"),
         helper.make_node("Relu", ["hb"], ["y"], name="relu0")], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w0"),
         numpy_helper.from_array(np.full(4, 0.5, np.float32), "b0")])
    functions = [helper.make_function("com.example", "Bar", ["X"], ["Y"],
                                      [helper.make_node("Abs", ["X"], ["Y"])],
                                      [helper.make_opsetid("", 17)])] if with_function else []
    model = helper.make_model(graph, functions=functions,
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.example", 1)])
    onnx.checker.check_model(model)
    return model


def save_with_external_data(model: onnx.ModelProto, path: Path) -> Path:
    """Save with every tensor in ``<name>.data``; return the data file."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # onnx.save mutates it
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{path.name}.data", size_threshold=0)
    return path.with_name(f"{path.name}.data")


ANN_SIZES = [8, 16, 16, 4]


def calib_x(rows: int = 250) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def snn_bytes() -> bytes:
    """A converted model of the standard ANN, serialized once for the module."""
    snn = convert(mlp_model(ANN_SIZES, seed=2), calib_x(), progress=False).model
    return snn.SerializeToString()


@pytest.fixture
def work(tmp_path: Path, snn_bytes: bytes) -> Path:
    """ann.onnx, calib.npz, snn.onnx and test.npz (labelled) in a fresh directory."""
    onnx.save(mlp_model(ANN_SIZES, seed=2), tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=calib_x())
    (tmp_path / "snn.onnx").write_bytes(snn_bytes)
    np.savez(tmp_path / "test.npz", x=calib_x(60), y=np.arange(60) % 4)
    return tmp_path


def convert_argv(d: Path, model: str = "ann.onnx", calib: str = "calib.npz",
                 *extra: str) -> list:
    return ["convert", d / model, "--calib", d / calib, "-o", d / "out.onnx", "--no-progress",
            *extra]


def eval_argv(d: Path, data: str = "test.npz", *extra: str) -> list:
    return ["eval", d / "snn.onnx", "--data", d / data, "--timesteps", "2,4", *extra]


# --------------------------------------------------------------------------- the cases
# Each case writes its bad input into the work directory and returns (argv, needles):
# the needles must all appear in the error line.

Case = Callable[[Path], "tuple[list, list[Needle]]"]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(function: Case) -> Case:
        CASES[name] = function
        return function
    return register


# ---- the model file

@case("model-truncated")
def _(d: Path):
    data = (d / "ann.onnx").read_bytes()
    (d / "cut.onnx").write_bytes(data[: len(data) // 2])
    return convert_argv(d, "cut.onnx"), ["cut.onnx"]


@case("model-random-bytes")
def _(d: Path):
    (d / "noise.onnx").write_bytes(np.random.default_rng(5).bytes(3000))
    return convert_argv(d, "noise.onnx"), ["noise.onnx"]


@case("model-is-text")
def _(d: Path):
    (d / "notes.onnx").write_text("this is not a model\nat all\n")
    return convert_argv(d, "notes.onnx"), ["notes.onnx"]


@case("model-empty-file")
def _(d: Path):
    (d / "empty.onnx").write_bytes(b"")
    return convert_argv(d, "empty.onnx"), ["empty.onnx"]


@case("eval-model-is-npz")
def _(d: Path):
    return ["eval", d / "calib.npz", "--data", d / "test.npz"], ["calib.npz"]


@case("eval-ann-is-text")
def _(d: Path):
    (d / "notes.txt").write_text("not a model\n")
    return [*eval_argv(d), "--ann", d / "notes.txt"], ["notes.txt"]


@case("model-external-data-missing")
def _(d: Path):
    data = save_with_external_data(mlp_model(ANN_SIZES, seed=2), d / "ext.onnx")
    data.unlink()
    return convert_argv(d, "ext.onnx"), ["ext.onnx", "ext.onnx.data"]


@case("model-external-data-truncated")
def _(d: Path):
    data = save_with_external_data(mlp_model(ANN_SIZES, seed=2), d / "ext.onnx")
    data.write_bytes(data.read_bytes()[:100])
    return convert_argv(d, "ext.onnx"), ["ext.onnx"]


@case("model-without-relu")
def _(d: Path):
    onnx.save(no_relu_model(), d / "linear.onnx")
    return convert_argv(d, "linear.onnx"), ["Relu"]


@case("model-unknown-custom-domain-op")
def _(d: Path):
    onnx.save(custom_op_model(), d / "custom.onnx")
    return convert_argv(d, "custom.onnx"), ["bar0", "com.example"]


# ---- calibration data

@case("calib-wrong-feature-count")
def _(d: Path):
    np.savez(d / "narrow.npz", x=calib_x()[:, :5])
    return convert_argv(d, calib="narrow.npz"), ["'x'", re.compile(r"\[\d+, 5\]"), "[N, 8]"]


@case("calib-wrong-rank")
def _(d: Path):
    np.savez(d / "rank3.npz", x=calib_x().reshape(250, 2, 4))
    return convert_argv(d, calib="rank3.npz"), ["'x'", re.compile(r"\[\d+, 2, 4\]"), "[N, 8]"]


@case("calib-strings")
def _(d: Path):
    np.savez(d / "words.npz", x=np.array([["a"] * 8] * 10))
    return convert_argv(d, calib="words.npz"), ["'x'", re.compile(r"<U|str"), "float32"]


@case("calib-object-dtype")
def _(d: Path):
    np.savez(d / "objects.npz", x=np.array([[1.0, None] * 4] * 10, dtype=object))
    return convert_argv(d, calib="objects.npz"), ["objects.npz", "'x'"]


@case("calib-complex-dtype")
def _(d: Path):
    np.savez(d / "complex.npz", x=calib_x().astype(np.complex64))
    return convert_argv(d, calib="complex.npz"), ["'x'", "complex"]


@case("calib-missing-input-of-two")
def _(d: Path):
    onnx.save(two_input_model(), d / "two.onnx")
    np.savez(d / "only_a.npz", a=calib_x()[:, :3])
    return convert_argv(d, "two.onnx", "only_a.npz"), ["only_a.npz", "'b'"]


@case("calib-wrong-array-name")
def _(d: Path):
    np.savez(d / "renamed.npz", data=calib_x())
    return convert_argv(d, calib="renamed.npz"), ["renamed.npz", "'x'", "data"]


@case("calib-not-an-npz")
def _(d: Path):
    (d / "table.npz").write_text("1,2,3\n4,5,6\n")
    return convert_argv(d, calib="table.npz"), ["table.npz"]


@case("calib-scalar-array")
def _(d: Path):
    np.savez(d / "scalar.npz", x=np.float32(3))
    return convert_argv(d, calib="scalar.npz"), ["scalar.npz", "'x'"]


@case("calib-nan")
def _(d: Path):
    x = calib_x()
    x[150, 3] = np.nan  # batch 1 at the default batch size of 100
    np.savez(d / "nan.npz", x=x)
    return convert_argv(d, calib="nan.npz"), ["'x'", "NaN", "batch 1"]


@case("calib-inf")
def _(d: Path):
    x = calib_x()
    x[7, 0] = -np.inf
    np.savez(d / "inf.npz", x=x)
    return convert_argv(d, calib="inf.npz"), ["'x'", "Inf", "batch 0"]


@case("calib-float64-overflows-float32")
def _(d: Path):
    x = calib_x().astype(np.float64)
    x[3, 3] = 1e300
    np.savez(d / "huge.npz", x=x)
    return convert_argv(d, calib="huge.npz"), ["'x'", "Inf"]


@case("calib-empty")
def _(d: Path):
    np.savez(d / "none.npz", x=np.zeros((0, 8), np.float32))
    # the line must say which file or tensor is empty, not just "the data"
    return convert_argv(d, calib="none.npz"), [re.compile(r"none\.npz|'x'"),
                                               re.compile(r"empty|no samples|0 rows")]


@case("calib-batch-size-zero")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--batch-size", "0"), \
        ["batch size", re.compile(r"\b0\b")]


# ---- calibration result and settings

@case("relu-never-activates")
def _(d: Path):
    onnx.save(mlp_model(ANN_SIZES, seed=2, bias_shift=-100.0), d / "dead.onnx")
    return convert_argv(d, "dead.onnx"), ["'relu0'", "'relu1'", "scale"]


# "--mode bogus" and "--timesteps 0" are rejected by argparse (exit status 2). The issue
# asks for one line there too, so these cases need the parser's error() to print
# "onnx-snn: error: ..." alone instead of the usage text plus "onnx-snn convert: error:".
@case("mode-unknown-string")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--mode", "bogus"), ["'bogus'", "mode"]


@case("mode-fraction-above-one")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--mode", "1.5"), ["1.5", "mode"]


@case("momentum-negative")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--momentum", "-0.1"), ["-0.1", "momentum"]


@case("momentum-nan")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--momentum", "nan"), ["nan", "momentum"]


@case("load-calibration-not-json")
def _(d: Path):
    (d / "scales.json").write_text("{not json")
    return ["convert", d / "ann.onnx", "--load-calibration", d / "scales.json",
            "-o", d / "out.onnx"], ["scales.json"]


# ---- eval: time steps and test data

@case("eval-timesteps-zero")
def _(d: Path):
    return ["eval", d / "snn.onnx", "--data", d / "test.npz", "--timesteps", "0"], \
        [re.compile(r"time ?steps", re.IGNORECASE), "0"]


@case("eval-timesteps-negative")
def _(d: Path):
    return ["eval", d / "snn.onnx", "--data", d / "test.npz", "--timesteps", "4,-8"], \
        [re.compile(r"time ?steps", re.IGNORECASE), "-8"]


@case("eval-data-nan")
def _(d: Path):
    x = calib_x(60)
    x[10, 2] = np.nan
    np.savez(d / "nan_test.npz", x=x, y=np.arange(60) % 4)
    return eval_argv(d, "nan_test.npz"), ["'x'", "NaN"]


@case("eval-data-empty")
def _(d: Path):
    np.savez(d / "none_test.npz", x=np.zeros((0, 8), np.float32), y=np.zeros(0, np.int64))
    return eval_argv(d, "none_test.npz"), [re.compile(r"none_test\.npz|'x'"),
                                           re.compile(r"empty|no samples|0 rows")]


@case("eval-data-strings")
def _(d: Path):
    np.savez(d / "words_test.npz", x=np.array([["a"] * 8] * 10), y=np.arange(10) % 4)
    return eval_argv(d, "words_test.npz"), ["'x'", re.compile(r"<U|str")]


@case("eval-data-wrong-shape")
def _(d: Path):
    np.savez(d / "narrow_test.npz", x=calib_x(60)[:, :5], y=np.arange(60) % 4)
    return eval_argv(d, "narrow_test.npz"), ["'x'", re.compile(r"\b5\b"), re.compile(r"\b8\b")]


@case("eval-labels-missing")
def _(d: Path):
    np.savez(d / "unlabelled.npz", x=calib_x(60))
    return eval_argv(d, "unlabelled.npz"), ["unlabelled.npz", "'y'"]


@case("eval-labels-not-integers")
def _(d: Path):
    np.savez(d / "float_labels.npz", x=calib_x(60), y=np.linspace(0, 3, 60))
    return eval_argv(d, "float_labels.npz"), ["label", "float64"]


@case("eval-batch-size-zero")
def _(d: Path):
    return eval_argv(d, "test.npz", "--batch-size", "0"), ["batch size", re.compile(r"\b0\b")]


# ---- output paths

@case("json-in-missing-directory")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--json", d / "nowhere" / "r.json"), \
        ["nowhere"]


@case("save-calibration-in-missing-directory")
def _(d: Path):
    return convert_argv(d, "ann.onnx", "calib.npz", "--save-calibration",
                        d / "nowhere" / "s.json"), ["nowhere"]


@case("output-under-a-file")
def _(d: Path):
    return ["convert", d / "ann.onnx", "--calib", d / "calib.npz",
            "-o", d / "calib.npz" / "out.onnx"], ["calib.npz"]


@case("output-is-input-via-dot-dot")
def _(d: Path):
    spelled = d / "." / ".." / d.name / "ann.onnx"
    return ["convert", d / "ann.onnx", "--calib", d / "calib.npz", "-o", spelled], ["ann.onnx"]


@case("output-is-symlink-to-input")
def _(d: Path):
    (d / "link.onnx").symlink_to("ann.onnx")
    return ["convert", d / "ann.onnx", "--calib", d / "calib.npz", "-o", d / "link.onnx"], \
        ["link.onnx"]


@case("input-is-symlink-to-output")
def _(d: Path):
    (d / "link.onnx").symlink_to("ann.onnx")
    return ["convert", d / "link.onnx", "--calib", d / "calib.npz", "-o", d / "ann.onnx"], \
        ["ann.onnx"]


@case("save-calibration-is-load-calibration")
def _(d: Path):
    Calibration([LayerCalibration("relu0", 1.0, "Max", 0.1),
                 LayerCalibration("relu1", 1.0, "Max", 0.1)], 1, 10).save(d / "scales.json")
    return ["convert", d / "ann.onnx", "--load-calibration", d / "scales.json",
            "--save-calibration", f"{d}/./scales.json", "-o", d / "out.onnx"], \
        ["scales.json"]


@case("output-is-input-external-data-file")
def _(d: Path):
    save_with_external_data(mlp_model(ANN_SIZES, seed=2), d / "ext.onnx")
    return ["convert", d / "ext.onnx", "--calib", d / "calib.npz",
            "-o", d / "ext.onnx.data", "--no-progress"], ["ext.onnx.data"]


@case("eval-json-is-the-model")
def _(d: Path):
    return eval_argv(d, "test.npz", "--json", d / "snn.onnx"), ["snn.onnx"]


@case("eval-json-is-the-data")
def _(d: Path):
    return eval_argv(d, "test.npz", "--json", d / "test.npz"), ["test.npz"]


#: The cases that are bad usage (an option value out of range): exit status 2.
USAGE = {"calib-batch-size-zero", "mode-unknown-string", "mode-fraction-above-one",
         "momentum-negative", "momentum-nan", "eval-timesteps-zero", "eval-timesteps-negative",
         "eval-batch-size-zero"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_error(name: str, work: Path, capsys) -> None:
    argv, needles = CASES[name](work)
    expect_error(argv, capsys, [work], needles, status=2 if name in USAGE else 1)


def test_output_is_input_spelled_relative_with_dot_dot(work: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``x/ann.onnx`` in, ``./x/../x/ann.onnx`` out (relative to the working directory)."""
    monkeypatch.chdir(work.parent)
    name = work.name
    expect_error(["convert", f"{name}/ann.onnx", "--calib", f"{name}/calib.npz",
                  "-o", f"./{name}/../{name}/ann.onnx", "--no-progress"], capsys, [work],
                 ["ann.onnx"])


# --------------------------------------------------------------------------- outputs in /proc

@needs_read_only_proc
def test_output_in_read_only_directory_names_the_output(work: Path, capsys) -> None:
    """Even root cannot create /proc/onnx_snn_out.onnx: the error names that path (not a
    temporary name) and nothing is left behind."""
    argv = ["convert", work / "ann.onnx", "--calib", work / "calib.npz", "-o", PROC_OUTPUT,
            "--no-progress"]
    expect_error(argv, capsys, [work], [str(PROC_OUTPUT)])
    assert not PROC_OUTPUT.exists()


@needs_read_only_proc
def test_unwritable_report_leaves_no_model_behind(work: Path, capsys) -> None:
    """-o is fine but --json cannot be written: the command fails, so out.onnx must not be
    left behind (every output is checked before work starts, or removed on failure)."""
    report = Path("/proc/onnx_snn_report.json")
    expect_error(convert_argv(work, "ann.onnx", "calib.npz", "--json", report), capsys, [work],
                 [str(report)])
    assert not report.exists()


@needs_read_only_proc
def test_api_save_into_read_only_directory_raises_onnx_snn_error(tmp_path: Path) -> None:
    snn = convert(mlp_model(ANN_SIZES, seed=2), calib_x(), progress=False)
    with pytest.raises(OnnxSnnError, match=re.escape(str(PROC_OUTPUT))):
        snn.save(PROC_OUTPUT)
    assert not PROC_OUTPUT.exists()


# --------------------------------------------------------------------------- real subprocesses

@pytest.mark.parametrize("name", ["model-truncated", "model-unknown-custom-domain-op",
                                  "eval-timesteps-zero", "eval-batch-size-zero"])
def test_console_script_exits_non_zero_without_traceback(name: str, work: Path) -> None:
    argv, needles = CASES[name](work)
    before = snapshot(work)
    done = run_script(argv, work)
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert_one_line_error(done.stderr, needles)
    assert_untouched(before, snapshot(work))


@needs_read_only_proc
def test_console_script_output_in_proc(work: Path) -> None:
    done = run_script(["convert", work / "ann.onnx", "--calib", work / "calib.npz",
                       "-o", PROC_OUTPUT], work)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert_one_line_error(done.stderr, [str(PROC_OUTPUT)])


def test_verbose_still_shows_the_traceback(work: Path) -> None:
    argv, _ = CASES["model-truncated"](work)
    done = run_script([*argv, "--verbose"], work)
    assert done.returncode != 0 and "Traceback" in done.stderr and "cut.onnx" in done.stderr


# --------------------------------------------------------------------------- Python API

def test_api_corrupt_model_names_the_file(work: Path) -> None:
    CASES["model-truncated"](work)
    with pytest.raises(OnnxSnnError, match=r"cut\.onnx"):
        convert(work / "cut.onnx", calib_x(), progress=False)


def test_api_missing_input_names_it() -> None:
    with pytest.raises(OnnxSnnError, match="'b'"):
        convert(two_input_model(), {"a": calib_x()[:, :3]}, progress=False)


def test_api_unknown_custom_op_refused_before_calibration() -> None:
    """The node and its domain are named, and not one batch is read."""
    read = []

    def data():
        read.append(1)
        yield calib_x()

    with pytest.raises(OnnxSnnError, match=r"bar0.*com\.example|com\.example.*bar0"):
        convert(custom_op_model(), data(), progress=False)
    assert not read, "calibration data was read before the unknown op was reported"


def test_custom_domain_op_defined_as_a_function_converts(tmp_path: Path, capsys) -> None:
    """Control for the case above: the same op, defined in the model, is accepted."""
    onnx.save(custom_op_model(with_function=True), tmp_path / "custom.onnx")
    np.savez(tmp_path / "calib.npz", x=calib_x())
    status, _, err = run_main(convert_argv(tmp_path, "custom.onnx"), capsys)
    assert status == 0, err
    _, mean = run_snn(tmp_path / "out.onnx", calib_x(8), 16)
    assert mean.shape == (8, 4)


@pytest.mark.parametrize("timesteps", [0, -3])
def test_api_run_snn_refuses_non_positive_timesteps(work: Path, timesteps: int) -> None:
    with pytest.raises(OnnxSnnError, match=rf"time steps.*{timesteps}"):
        run_snn(work / "snn.onnx", calib_x(4), timesteps)
    with pytest.raises(OnnxSnnError, match=rf"time steps.*{timesteps}"):
        run_snn(SpikingSession(work / "snn.onnx"), calib_x(4), timesteps)


def test_api_snn_accuracy_refuses_zero_timesteps(work: Path) -> None:
    with pytest.raises(OnnxSnnError, match="time steps"):
        snn_accuracy(work / "snn.onnx", calib_x(8), np.zeros(8, np.int64), [4, 0])


def test_api_snn_accuracy_on_empty_data_raises_onnx_snn_error(work: Path) -> None:
    with pytest.raises(OnnxSnnError, match=r"empty|no samples"):
        snn_accuracy(work / "snn.onnx", np.zeros((0, 8), np.float32), np.zeros(0, np.int64), [4])


def test_api_snn_accuracy_batch_size_zero_raises_onnx_snn_error(work: Path) -> None:
    with pytest.raises(OnnxSnnError, match="batch size"):
        snn_accuracy(work / "snn.onnx", calib_x(8), np.zeros(8, np.int64), [4], batch_size=0)


# --------------------------------------------------------------------------- external data

def _external_tensors(path: Path) -> list[onnx.TensorProto]:
    model = onnx.load(str(path), load_external_data=False)
    return [t for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL]


def test_large_model_path_with_small_threshold(work: Path, capsys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The >2 GB code path, fast: with EXTERNAL_DATA_THRESHOLD at 1000 bytes, an input
    saved with external data loads, and the output is written as out.onnx + out.onnx.data,
    loads back with onnx.load and runs; no temporary file is left and inputs are intact."""
    monkeypatch.setattr(onnx_snn.io.models, "EXTERNAL_DATA_THRESHOLD", 1000)
    ann = mlp_model([8, 64, 64, 4], seed=2)
    save_with_external_data(ann, work / "ext.onnx")
    before = snapshot(work)
    status, _, err = run_main(convert_argv(work, "ext.onnx"), capsys)
    assert status == 0, err
    after = snapshot(work)
    assert sorted(set(after) - set(before)) == [str(work / "out.onnx"),
                                                str(work / "out.onnx.data")]
    assert all(after[p] == h for p, h in before.items()), "an input file changed"

    locations = {entry.value for t in _external_tensors(work / "out.onnx")
                 for entry in t.external_data if entry.key == "location"}
    assert locations == {"out.onnx.data"}  # not the temporary file's name
    loaded = onnx.load(str(work / "out.onnx"))
    onnx.checker.check_model(str(work / "out.onnx"), full_check=True)
    expected = convert(ann, str(work / "calib.npz"), progress=False).model
    x = calib_x(16)
    got, _ = run_snn(work / "out.onnx", x, 8)
    np.testing.assert_array_equal(got, run_snn(expected, x, 8)[0])
    np.testing.assert_array_equal(got, run_snn(loaded, x, 8)[0])


def test_saving_with_external_data_leaves_the_model_usable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saving twice (and running the in-memory model after saving) works: each saved model
    has its own data file, and save() does not strip the tensors from ``snn.model``."""
    monkeypatch.setattr(onnx_snn.io.models, "EXTERNAL_DATA_THRESHOLD", 1000)
    x = calib_x(16)
    snn = convert(mlp_model([8, 64, 64, 4], seed=2), calib_x(), progress=False)
    reference, _ = run_snn(snn.model, x, 8)
    snn.save(tmp_path / "a.onnx")
    snn.save(tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx.data").is_file()
    (tmp_path / "a.onnx").unlink()
    (tmp_path / "a.onnx.data").unlink()
    np.testing.assert_array_equal(run_snn(tmp_path / "b.onnx", x, 8)[0], reference)
    np.testing.assert_array_equal(run_snn(snn.model, x, 8)[0], reference)


def _write_big_model(path: Path, elements: int) -> None:
    """x [N, 8] + Slice(big)[:8] -> Gemm -> Relu -> Gemm -> y, where ``big`` holds
    ``elements`` float32 zeros in an external (sparse) data file."""
    rng = np.random.default_rng(0)
    big = TensorProto(name="big", dims=[elements], data_type=TensorProto.FLOAT)
    for key, value in {"location": f"{path.name}.data", "offset": "0",
                       "length": str(elements * 4)}.items():
        big.external_data.add(key=key, value=value)
    big.data_location = TensorProto.EXTERNAL
    with open(path.with_name(f"{path.name}.data"), "wb") as data:
        data.truncate(elements * 4)
    inits = [big] + [numpy_helper.from_array(np.asarray(v), k) for k, v in {
        "starts": [0], "ends": [8],
        "w0": rng.normal(size=(8, 16)).astype(np.float32), "b0": np.full(16, 0.1, np.float32),
        "w1": rng.normal(size=(16, 4)).astype(np.float32), "b1": np.zeros(4, np.float32),
    }.items()]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["big", "starts", "ends"], ["offset"], name="slice"),
         helper.make_node("Add", ["x", "offset"], ["shifted"], name="add"),
         helper.make_node("Gemm", ["shifted", "w0", "b0"], ["h"], name="fc0"),
         helper.make_node("Relu", ["h"], ["r"], name="relu0"),
         helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], name="fc1")], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())


def test_model_above_2gb_is_refused_up_front(tmp_path: Path, capsys) -> None:
    """A >2 GB model (one 2 GiB + 4 KiB initializer in a sparse big.onnx.data) exceeds what
    protobuf can hold: it is refused before loading, with one line naming the file and its
    size in bytes, leaving nothing behind and the inputs unchanged."""
    elements = 2 ** 29 + 1024  # 2 GiB + 4 KiB of float32
    _write_big_model(tmp_path / "big.onnx", elements)
    np.savez(tmp_path / "calib.npz", x=calib_x(64))
    inputs = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    try:
        status, _, err = run_main(["convert", tmp_path / "big.onnx", "--calib",
                                   tmp_path / "calib.npz", "-o", tmp_path / "snn.onnx",
                                   "--no-progress"], capsys)
        assert status == 1
        size = (tmp_path / "big.onnx").stat().st_size + elements * 4
        assert_one_line_error(err, ["big.onnx", f"{size:,} bytes", "2 GiB"])
        assert sorted(p.name for p in tmp_path.iterdir()) == \
            ["big.onnx", "big.onnx.data", "calib.npz"]
        assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in inputs} == inputs
    finally:  # do not leave a 2 GiB file in pytest's kept temporary directories
        for path in tmp_path.glob("*.data"):
            path.unlink()
