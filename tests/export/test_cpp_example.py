"""The C++ example (examples/cpp): built with CMake, it classifies like onnx_snn in Python.

The example is built once per module against the onnxruntime wheel's shared library
and the fetched C/C++ API headers. Without cmake, a C++ compiler or the headers the
tests skip, unless ``ONNX_SNN_REQUIRE_NATIVE=1`` (set by ``.ci/run``) makes that a
failure, as it does a missing native kernel library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model
from onnx import TensorProto, helper

from onnx_snn import SpikingSession, convert, native_library_path
from onnx_snn.export.formats import export_format

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("ONNX_SNN_REQUIRE_NATIVE") == "1"
STEPS = 32
#: onnxruntime's shared library as the wheel names it on Linux, macOS and Windows.
ORT_LIBRARY_PATTERNS = ("libonnxruntime.so*", "libonnxruntime*.dylib", "onnxruntime.dll")


def unavailable(reason: str) -> None:
    """Skip, or fail when the CI requires the native build."""
    if REQUIRE:
        pytest.fail(f"{reason} (ONNX_SNN_REQUIRE_NATIVE=1)")
    pytest.skip(reason)


def ort_library() -> Path | None:
    capi = Path(ort.__file__).parent / "capi"
    for pattern in ORT_LIBRARY_PATTERNS:
        found = sorted(capi.glob(pattern))
        if found:
            return found[0]
    return None


def call(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    """snn_classify, configured and built in a temporary directory."""
    compilers = [os.environ.get("CXX"), "c++", "g++", "clang++", "cl"]
    if shutil.which("cmake") is None:
        unavailable("cmake is not installed")
    if not any(c and shutil.which(c) for c in compilers):
        unavailable("no C++ compiler found")
    library = ort_library()
    if library is None:
        unavailable(f"no onnxruntime shared library in {Path(ort.__file__).parent / 'capi'}")
    headers = call(sys.executable, str(ROOT / "custom_ops" / "fetch_ort_headers.py"))
    include = headers.stdout.strip()
    if headers.returncode != 0 or not (Path(include) / "onnxruntime_cxx_api.h").is_file():
        unavailable(f"no onnxruntime headers: {headers.stderr.strip() or include}")
    build = tmp_path_factory.mktemp("cpp_build")
    for step in (["cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build),
                  "-DCMAKE_BUILD_TYPE=Release", f"-DORT_INCLUDE_DIR={include}",
                  f"-DORT_LIBRARY={library}"],
                 ["cmake", "--build", str(build), "--config", "Release"]):
        done = call(*step)
        assert done.returncode == 0, f"{' '.join(step)}\n{done.stdout}\n{done.stderr}"
    for candidate in (build / "snn_classify", build / "Release" / "snn_classify.exe"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"no snn_classify in {build}")


def digits_cnn_model() -> tuple:
    """A Conv-Relu-AvgPool-Gemm net on the digits (random conv, least-squares readout)
    and 40 test images: ``(model, calibration images, test images)``."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    x = (load_digits().images / 16).astype(np.float32)[:, None]
    y = load_digits().target
    inits = {"w1": (rng.normal(size=(16, 1, 3, 3)) / 3).astype(np.float32),
             "b1": (rng.normal(size=16) * 0.1).astype(np.float32)}
    features = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", ["c"], ["r"]),
                helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2],
                                 strides=[2, 2]),
                helper.make_node("Flatten", ["p"], ["f"])]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    feature_model = make_model(
        features, [x_info], [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 256])],
        inits)
    f = ort.InferenceSession(feature_model.SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {"x": x[:500]})[0]
    readout = np.linalg.lstsq(np.hstack([f, np.ones((len(f), 1), np.float32)]),
                              np.eye(10)[y[:500]], rcond=None)[0].astype(np.float32)
    inits.update(w2=readout[:-1], b2=readout[-1])
    model = make_model(
        [*features, helper.make_node("Gemm", ["f", "w2", "b2"], ["y"])], [x_info],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return model, x[:200], x[500:540]


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """``(converted model, input .npy, Python's predictions after STEPS steps)``."""
    ann, calibration, x = digits_cnn_model()
    directory = tmp_path_factory.mktemp("cpp_case")
    model = convert(ann, calibration, progress=False).save(directory / "snn.onnx")
    np.save(directory / "x.npy", x)
    expected = SpikingSession(model).run(x, timesteps=STEPS).predictions()[-1]
    assert len(np.unique(expected)) >= 5, expected  # a test that can tell classes apart
    return model, directory / "x.npy", expected


def classify(binary: Path, model: Path, library: str, npy: Path,
             steps: str = str(STEPS), *chunk: str) -> subprocess.CompletedProcess:
    return call(str(binary), str(model), library, str(npy), steps, *chunk, timeout=60)


def test_function_body_predictions_match_python(binary, case) -> None:
    model, npy, expected = case
    done = classify(binary, model, "-", npy)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.array(done.stdout.split(), np.int64), expected)


def test_kernel_library_predictions_match_python(binary, case) -> None:
    library = native_library_path()
    if library is None:
        unavailable("the native kernel library was not built")
    model, npy, expected = case
    done = classify(binary, model, str(library), npy)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.array(done.stdout.split(), np.int64), expected)


@pytest.mark.parametrize("engine", ["function", "kernel"])
def test_chunked_model_run_in_chunks_matches_python(binary, case, tmp_path, engine) -> None:
    """The chunked format, run as calls of 5 steps with the states fed back, classifies
    like Python's one run of all the steps."""
    model, npy, expected = case
    library = "-" if engine == "function" else native_library_path()
    if library is None:
        unavailable("the native kernel library was not built")
    chunked = tmp_path / "chunked.onnx"
    onnx.save(export_format(model, "chunked"), chunked)
    done = classify(binary, chunked, str(library), npy, str(STEPS), "5")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.array(done.stdout.split(), np.int64), expected)


def test_chunks_need_the_chunked_format(binary, case) -> None:
    model, npy, _ = case
    done = classify(binary, model, "-", npy, str(STEPS), "5")
    assert done.returncode == 1 and "needs a model in the chunked format" in done.stderr


@pytest.mark.parametrize("bad, message", [
    ("float64", "need little-endian float32"), ("fortran", "Fortran-order"),
    ("text", "not a .npy file"), ("steps", "T must be a positive integer"),
    ("model", "onnxruntime")])
def test_bad_inputs_give_one_line_errors(binary, case, tmp_path, bad, message) -> None:
    model, npy, _ = case
    x = np.load(npy)
    steps, bad_npy = str(STEPS), tmp_path / "bad.npy"
    if bad == "float64":
        np.save(bad_npy, x.astype(np.float64))
    elif bad == "fortran":
        np.save(bad_npy, np.asfortranarray(x[:, 0]))
    elif bad == "text":
        bad_npy.write_text("0.5, 0.25\n")
    elif bad == "steps":
        bad_npy, steps = npy, "0"
    else:  # images [N, 8, 8] without the channel axis: onnxruntime rejects the rank
        np.save(bad_npy, x[:, 0])
    done = classify(binary, model, "-", bad_npy, steps)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("snn_classify: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
