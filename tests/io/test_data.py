"""Data readers (onnx_snn.io.data): every accepted form gives the right validated batches,
and bad data gives an OnnxSnnError that says which input or file is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader
from torch.utils.data import DataLoader, TensorDataset

from onnx_snn import HookFactory, OnnxSnnError, convert
from onnx_snn.cli import main
from onnx_snn.io.data import InputSpec, batches, input_specs, labelled_batches
from onnx_snn.runtime import run_snn

OPSET = 17


# --------------------------------------------------------------------------- models

def _model(nodes: list[onnx.NodeProto], inputs: dict[str, int], outputs: dict[str, int],
           inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", f]) for n, f in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", f]) for n, f in outputs.items()],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def single_input_model() -> onnx.ModelProto:
    """x [N, 4] -> MatMul -> Relu 'r' -> y [N, 3]."""
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    return _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                   helper.make_node("Relu", ["h"], ["y"], name="r")],
                  {"x": 4}, {"y": 3}, [numpy_helper.from_array(weight, "w")])


TWO_INPUT_WEIGHT = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)


def two_input_model() -> onnx.ModelProto:
    """a [N, 3], b [N, 2] -> Concat -> MatMul -> Relu 'r' -> y [N, 4]."""
    return _model([helper.make_node("Concat", ["a", "b"], ["ab"], name="cat", axis=1),
                   helper.make_node("MatMul", ["ab", "w"], ["h"], name="mm"),
                   helper.make_node("Relu", ["h"], ["y"], name="r")],
                  {"a": 3, "b": 2}, {"y": 4}, [numpy_helper.from_array(TWO_INPUT_WEIGHT, "w")])


def single_specs() -> list[InputSpec]:
    return input_specs(single_input_model())


def two_specs() -> list[InputSpec]:
    return input_specs(two_input_model())


def sample(rows: int, features: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, features)).astype(np.float32)


def read(data: Any, specs: list[InputSpec], batch_size: int = 100) -> list[dict[str, np.ndarray]]:
    """All batches of ``data``, materialised."""
    return list(batches(data, specs, batch_size))


def assert_batches(got: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]]) -> None:
    """Same batches, same keys, float32, equal values."""
    assert len(got) == len(expected)
    for batch, want in zip(got, expected):
        assert set(batch) == set(want)
        for name, array in want.items():
            assert batch[name].dtype == np.float32
            np.testing.assert_array_equal(batch[name], array.astype(np.float32))


def cut(arrays: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Reference batching: consecutive slices along axis 0."""
    rows = len(next(iter(arrays.values())))
    return [{k: v[s:s + batch_size] for k, v in arrays.items()} for s in range(0, rows, batch_size)]


# --------------------------------------------------------------------------- accepted forms

def test_input_specs() -> None:
    assert single_specs() == [InputSpec("x", np.dtype(np.float32), (None, 4))]
    assert [s.name for s in two_specs()] == ["a", "b"]


@pytest.mark.parametrize("rows,batch_size,sizes", [(10, 4, [4, 4, 2]), (12, 4, [4, 4, 4]),
                                                   (3, 5, [3]), (7, 1, [1] * 7)])
def test_array_cut_into_batches(rows: int, batch_size: int, sizes: list[int]) -> None:
    x = sample(rows, 4)
    stream = batches(x, single_specs(), batch_size)
    got = list(stream)
    assert stream.num_batches == len(sizes)
    assert [b["x"].shape[0] for b in got] == sizes
    assert_batches(got, cut({"x": x}, batch_size))
    assert_batches(list(stream), got)  # an array source can be read again


def test_torch_tensor_as_array() -> None:
    x = sample(9, 4)
    assert_batches(read(torch.from_numpy(x), single_specs(), 4), cut({"x": x}, 4))


def test_dict_cut_into_batches_for_two_inputs() -> None:
    arrays = {"a": sample(11, 3, 1), "b": sample(11, 2, 2)}
    stream = batches(arrays, two_specs(), 4)
    assert stream.num_batches == 3
    assert_batches(list(stream), cut(arrays, 4))


def test_float64_cast_to_float32() -> None:
    x = np.random.default_rng(3).standard_normal((6, 4))
    got = read(x, single_specs(), 4)
    assert all(b["x"].dtype == np.float32 for b in got)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in got]), x.astype(np.float32))


def test_integer_data_cast_to_float32() -> None:
    x = np.arange(8 * 4).reshape(8, 4)
    got = read(x, single_specs(), 8)
    assert got[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(got[0]["x"], x.astype(np.float32))


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_with_x(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "data.npz"
    save = np.savez_compressed if compressed else np.savez
    save(path, x=np.random.default_rng(4).standard_normal((13, 4)), y=np.arange(13))
    with np.load(path) as archive:
        expected = cut({"x": archive["x"]}, 5)
    stream = batches(path, single_specs(), 5)
    assert stream.num_batches == 3
    assert_batches(list(stream), expected)
    assert_batches(read(str(path), single_specs(), 5), expected)  # str path too


def test_npz_with_input_names(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=sample(9, 3, 5), b=sample(9, 2, 6), labels=np.arange(9))
    with np.load(path) as archive:
        expected = cut({"a": archive["a"], "b": archive["b"]}, 4)
    assert_batches(read(path, two_specs(), 4), expected)


def test_npz_is_streamed_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading an .npz never loads whole arrays with np.load."""
    path = tmp_path / "data.npz"
    x = sample(10, 4, 7)
    np.savez(path, x=x)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("np.load called: the .npz was loaded whole")

    monkeypatch.setattr(np, "load", refuse)
    assert_batches(read(path, single_specs(), 3), cut({"x": x}, 3))


def test_iterable_of_arrays() -> None:
    parts = [sample(3, 4, 1), sample(5, 4, 2), sample(1, 4, 3)]
    stream = batches(parts, single_specs(), batch_size=2)  # items are used as given
    assert stream.num_batches == 3
    assert_batches(list(stream), [{"x": p} for p in parts])


def test_generator_of_arrays() -> None:
    parts = [sample(3, 4, 1), sample(2, 4, 2)]
    stream = batches((p for p in parts), single_specs(), batch_size=10)
    assert stream.num_batches is None
    assert_batches(list(stream), [{"x": p} for p in parts])


def test_iterable_of_dicts() -> None:
    parts = [{"a": sample(2, 3, i), "b": sample(2, 2, i + 10), "label": np.arange(2)}
             for i in range(3)]
    assert_batches(read(parts, two_specs()), [{"a": p["a"], "b": p["b"]} for p in parts])


def test_iterable_of_input_target_tuples() -> None:
    parts = [(sample(4, 4, i), np.arange(4)) for i in range(3)]
    assert_batches(read(parts, single_specs()), [{"x": x} for x, _ in parts])


def test_iterable_of_dict_target_tuples() -> None:
    parts = [({"a": sample(2, 3, i), "b": sample(2, 2, i)}, np.arange(2)) for i in range(2)]
    assert_batches(read(parts, two_specs()), [p[0] for p in parts])


@pytest.mark.parametrize("with_targets", [True, False])
def test_torch_dataloader(with_targets: bool) -> None:
    x = sample(10, 4, 8)
    tensors = [torch.from_numpy(x)] + [torch.arange(10)] * with_targets
    loader = DataLoader(TensorDataset(*tensors), batch_size=4, shuffle=False)
    stream = batches(loader, single_specs(), batch_size=100)
    assert stream.num_batches == 3
    assert_batches(list(stream), cut({"x": x}, 4))


# --------------------------------------------------------------------------- errors

def _error(data: Any, specs: list[InputSpec], batch_size: int = 4) -> str:
    with pytest.raises(OnnxSnnError) as caught:
        read(data, specs, batch_size)
    return str(caught.value)


def test_wrong_feature_count_names_input() -> None:
    message = _error(sample(6, 5), single_specs())
    assert "'x'" in message and "[4, 5]" in message and "[N, 4]" in message


def test_wrong_rank_names_input() -> None:
    message = _error(np.zeros((6, 4, 1), np.float32), single_specs())
    assert "'x'" in message and "shape" in message


def test_wrong_shape_in_dict_names_that_input() -> None:
    message = _error({"a": sample(4, 3), "b": sample(4, 3)}, two_specs())
    assert "'b'" in message and "'a'" not in message


@pytest.mark.parametrize("data", [np.array([["a"] * 4] * 2), np.array([[object()] * 4] * 2)],
                         ids=["strings", "objects"])
def test_non_numeric_dtype_names_input(data: np.ndarray) -> None:
    message = _error(data, single_specs())
    assert "'x'" in message and "dtype" in message


def test_missing_input_in_dict_names_it() -> None:
    message = _error({"a": sample(4, 3), "c": sample(4, 2)}, two_specs())
    assert "'b'" in message and "missing" in message


def test_array_for_two_input_model_asks_for_dict() -> None:
    message = _error(sample(4, 5), two_specs())
    assert "dict" in message and "a" in message and "b" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_input_and_batch(bad: float) -> None:
    x = sample(10, 4)
    x[6, 2] = bad
    message = _error(x, single_specs(), batch_size=4)
    assert "'x'" in message and "NaN or Inf" in message and "batch 1" in message


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_overflowing_float32_is_rejected() -> None:
    x = np.full((2, 4), 1e300)
    assert "NaN or Inf" in _error(x, single_specs())


@pytest.mark.parametrize("data", [np.zeros((0, 4), np.float32), [], {"x": np.zeros((0, 4))}],
                         ids=["array", "list", "dict"])
def test_empty_data(data: Any) -> None:
    assert "empty" in _error(data, single_specs())


def test_empty_batch_in_iterable() -> None:
    message = _error([sample(2, 4), np.zeros((0, 4), np.float32)], single_specs())
    assert "'x'" in message and "batch 1" in message


def test_missing_npz_file_named(tmp_path: Path) -> None:
    path = tmp_path / "nothere.npz"
    message = _error(path, single_specs())
    assert str(path) in message


def test_npz_without_matching_array(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, features=sample(4, 4), y=np.arange(4))
    message = _error(path, single_specs())
    assert str(path) in message and "'x'" in message and "features" in message


def test_npz_missing_one_input(tmp_path: Path) -> None:
    path = tmp_path / "half.npz"
    np.savez(path, a=sample(4, 3))
    message = _error(path, two_specs())
    assert str(path) in message and "'b'" in message


@pytest.mark.parametrize("content", [b"x,y\n1,2\n", b""], ids=["text", "empty"])
def test_non_npz_file_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    message = _error(path, single_specs())
    assert str(path) in message and ".npz" in message


def test_npy_file_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, sample(4, 4))
    assert str(path) in _error(path, single_specs())


def test_npz_wrong_shape_names_input(tmp_path: Path) -> None:
    path = tmp_path / "wide.npz"
    np.savez(path, x=sample(4, 6))
    message = _error(path, single_specs())
    assert "'x'" in message and "shape" in message


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None], ids=repr)
def test_invalid_batch_size(batch_size: Any) -> None:
    message = _error(sample(4, 4), single_specs(), batch_size=batch_size)
    assert "batch size" in message


def test_unsupported_data_type() -> None:
    assert "unsupported" in _error(42, single_specs())


# --------------------------------------------------------------------------- end to end

def _relu_outputs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The two-input model's Relu output, in float64 numpy."""
    return np.maximum(np.concatenate([a, b], axis=1).astype(np.float64) @ TWO_INPUT_WEIGHT, 0)


@pytest.mark.parametrize("form", ["dict", "list_of_dicts"])
def test_convert_two_input_model_with_dict_batches(form: str) -> None:
    """Calibration through ``convert`` with dict batches; the SNN then runs on a dict."""
    a, b = sample(17, 3, 20), sample(17, 2, 21)
    data: Any = {"a": a, "b": b} if form == "dict" else cut({"a": a, "b": b}, 6)
    result = convert(two_input_model(), data, hook_factory=HookFactory("Max", 0.5),
                     batch_size=6, progress=False)
    per_batch = [_relu_outputs(a[s:s + 6], b[s:s + 6]).max() for s in range(0, 17, 6)]
    expected = per_batch[0]
    for value in per_batch[1:]:
        expected = 0.5 * expected + 0.5 * value
    assert list(result.calibration.scales) == ["r"]
    assert result.calibration.scales["r"] == pytest.approx(expected, rel=1e-5)
    assert (result.calibration.batches, result.calibration.samples) == (3, 17)

    single = convert(two_input_model(), {"a": a, "b": b}, batch_size=17, progress=False)
    scale = single.calibration.scales["r"]
    timesteps = 64
    per_step, mean = run_snn(single.model, {"a": a, "b": b}, timesteps)
    assert per_step.shape == (timesteps, 17, 4)
    # Rate coding: the mean output is within one spike (scale / T) of the ReLU output.
    assert np.abs(mean - _relu_outputs(a, b)).max() <= scale / timesteps * 1.01 + 1e-5


# --------------------------------------------------------------------------- readers and labels

class ArrayReader(CalibrationDataReader):
    """onnxruntime's calibration protocol over an array, ``batch`` rows per feed."""

    def __init__(self, x: np.ndarray, batch: int, rewindable: bool = True) -> None:
        self.x, self.batch, self.position = x, batch, 0
        if not rewindable:
            self.rewind = None

    def get_next(self) -> dict | None:
        if self.position >= len(self.x):
            return None
        self.position += self.batch
        return {"x": self.x[self.position - self.batch:self.position]}

    def rewind(self) -> None:
        self.position = 0


def test_calibration_data_reader_calibrates_like_the_array() -> None:
    """convert() used to call len() on a CalibrationDataReader (NotImplementedError)."""
    x = sample(25, 4, 3)
    by_reader = convert(single_input_model(), ArrayReader(x, 10), progress=False)
    by_array = convert(single_input_model(), x, batch_size=10, progress=False)
    assert by_reader.calibration.scales == by_array.calibration.scales
    assert (by_reader.calibration.batches, by_reader.calibration.samples) == (3, 25)


def test_a_reader_is_rewound_for_each_pass_of_bias_calibration() -> None:
    x = sample(25, 4, 3)
    by_reader = convert(single_input_model(), ArrayReader(x, 10), bias_calibration=4,
                        progress=False)
    by_array = convert(single_input_model(), x, batch_size=10, bias_calibration=4,
                       progress=False)
    np.testing.assert_array_equal(by_reader.layers[0].bias_shift, by_array.layers[0].bias_shift)


@pytest.mark.parametrize("data", [lambda x: (b for b in [x[:10], x[10:]]),
                                  lambda x: ArrayReader(x, 10, rewindable=False)],
                         ids=["generator", "reader-without-rewind"])
def test_one_shot_data_is_refused_where_it_is_read_twice(data) -> None:
    with pytest.raises(OnnxSnnError, match="more than once"):
        convert(single_input_model(), data(sample(20, 4, 3)), bias_calibration=4,
                progress=False)


def labelled_forms(x: np.ndarray, y: np.ndarray, tmp_path: Path) -> dict[str, tuple]:
    """The same labelled data in every form labelled_batches takes: (data, labels)."""
    np.savez(tmp_path / "data.npz", x=x, y=y)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=4)
    return {"arrays": (x, y), "dict": ({"x": x, "y": y}, None),
            "npz": (tmp_path / "data.npz", None),
            "pairs": ([(x[s:s + 4], y[s:s + 4]) for s in range(0, len(x), 4)], None),
            "dataloader": (loader, None)}


def test_every_labelled_form_gives_the_same_batches(tmp_path: Path) -> None:
    x, y = sample(10, 4, 5), np.arange(10) % 3
    for form, (data, labels) in labelled_forms(x, y, tmp_path).items():
        got = list(labelled_batches(data, single_specs(), 4, labels))
        assert [b.start for b in got] == [0, 4, 8], form
        np.testing.assert_array_equal(np.concatenate([b.feed["x"] for b in got]), x)
        np.testing.assert_array_equal(np.concatenate([b.labels for b in got]), y)


def test_eval_streams_the_npz_of_a_two_input_model(tmp_path: Path, monkeypatch) -> None:
    """Arrays named after the inputs, labels 'y': eval reads them batch by batch (np.load,
    which loads whole arrays, is never called) and the ANN scores its own predictions."""
    a, b = sample(30, 3, 1), sample(30, 2, 2)
    labels = _relu_outputs(a, b).argmax(axis=1)
    snn = convert(two_input_model(), {"a": a, "b": b}, progress=False)
    snn.save(tmp_path / "snn.onnx")
    onnx.save(two_input_model(), tmp_path / "ann.onnx")
    np.savez(tmp_path / "test.npz", a=a, b=b, y=labels)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load read a whole array"))
    result = tmp_path / "result.json"
    assert main(["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--batch-size", "7", "--timesteps",
                 "256", "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    assert data["ann_accuracy"] == 1.0
    assert data["snn_accuracy"]["256"] >= 0.9
