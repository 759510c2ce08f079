"""Hostile inputs at the boundaries: models that the later steps could not read, neuron
settings and step counts that overflow float32, and Python API arguments of the wrong
kind. Each is refused up front with one clear error naming the file, node, tensor or
value (never a raw ValueError, AttributeError or TypeError, never a silent inf), and
an error keeps the exception that caused it for ``--verbose``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlp_model
from hostile import expect_error, run_script
from onnx import TensorProto, helper

from onnx_snn import HookFactory, NeuronFactory, OnnxSnnError, SpikingSession, convert
from onnx_snn.measure.evaluation import snn_accuracy
from onnx_snn.ops.time_ops import MAX_COUNTED_STEPS
from onnx_snn.runtime.sessions import create_session
from onnx_snn.snn.neurons import MAX_POTENTIAL_SETTING

SIZES = [4, 8, 3]


def _x(rows: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, SIZES[0])).astype(np.float32)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    np.savez(tmp_path / "calib.npz", x=_x())
    return tmp_path


# --------------------------------------------------------------------------- unreadable models

def _edited(edit) -> onnx.ModelProto:
    model = mlp_model(SIZES, seed=1)
    edit(model)
    return model


def _short_initializer(model: onnx.ModelProto) -> None:
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]


def _input_of_type(kind: onnx.TypeProto):
    def edit(model: onnx.ModelProto) -> None:
        model.graph.input.append(helper.make_value_info("extra", kind))
    return edit


def _unknown_attribute(model: onnx.ModelProto) -> None:
    model.graph.node[1].attribute.append(helper.make_attribute("bogus", 3))


def _undefined_tensor(model: onnx.ModelProto) -> None:
    model.graph.node[2].input[0] = "nowhere"


FLOAT = helper.make_tensor_type_proto(TensorProto.FLOAT, [1])
BAD_MODELS = {
    "initializer-short-of-its-shape": (_short_initializer, ["'w0'", "124 bytes", "needs 128"]),
    "sequence-input": (_input_of_type(helper.make_sequence_type_proto(FLOAT)),
                       ["input 'extra'", "a sequence"]),
    "optional-input": (_input_of_type(helper.make_optional_type_proto(FLOAT)),
                       ["input 'extra'", "an optional"]),
    "map-input": (_input_of_type(helper.make_map_type_proto(TensorProto.INT64, FLOAT)),
                  ["input 'extra'", "a map"]),
    "attribute-the-op-lacks": (_unknown_attribute, ["'relu0'", "'bogus'", "Relu"]),
    "tensor-nothing-defines": (_undefined_tensor, ["'fc1'", "'nowhere'", "defines"]),
}


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_an_unreadable_model_is_refused_naming_the_file(name: str, folder: Path,
                                                        capsys) -> None:
    edit, needles = BAD_MODELS[name]
    onnx.save(_edited(edit), folder / "ann.onnx")
    expect_error(["convert", folder / "ann.onnx", "--calib", folder / "calib.npz", "-o",
                  folder / "out.onnx", "--no-progress"], capsys, [folder],
                 ["ann.onnx", *needles])


def test_a_name_that_is_not_utf8_is_refused_naming_the_node(folder: Path, capsys) -> None:
    data = mlp_model(SIZES, seed=1).SerializeToString().replace(b"relu0", b"rel\xff0")
    (folder / "ann.onnx").write_bytes(data)
    expect_error(["convert", folder / "ann.onnx", "--calib", folder / "calib.npz", "-o",
                  folder / "out.onnx", "--no-progress"], capsys, [folder],
                 ["ann.onnx", "node #1", "UTF-8"])


# --------------------------------------------------------------------------- float32 bounds

@pytest.mark.parametrize("option, value", [("--v-threshold", "3e38"), ("--v-threshold", "1e19"),
                                           ("--v-reset", "-1e20"), ("--v-reset", "3e38")])
def test_neuron_settings_that_overflow_the_potential_are_refused(option: str, value: str,
                                                                 folder: Path, capsys) -> None:
    """--v-threshold 3e38 used to be accepted, and the potential overflowed to inf."""
    onnx.save(mlp_model(SIZES, seed=1), folder / "ann.onnx")
    expect_error(["convert", folder / "ann.onnx", "--calib", folder / "calib.npz", "-o",
                  folder / "out.onnx", "--no-progress", f"{option}={value}"], capsys, [folder],
                 [option.lstrip("-").replace("-", "_"), "2^63", repr(float(value))], 2)


def test_a_threshold_at_the_bound_keeps_every_potential_finite() -> None:
    """θ = 2^63: the SNN's outputs, read at the neuron scale, are the ANN's up to the
    same rate error as at θ = 1 (the threshold folds into the weights), and finite."""
    x = _x(50)
    outputs = {}
    for threshold in (1.0, MAX_POTENTIAL_SETTING):
        snn = convert(mlp_model(SIZES, seed=1), x, progress=False,
                      neuron_factory=NeuronFactory(v_threshold=threshold))
        outputs[threshold] = SpikingSession(snn.model).run(x, 16).mean
        assert np.isfinite(outputs[threshold]).all()
    np.testing.assert_allclose(outputs[MAX_POTENTIAL_SETTING], outputs[1.0], rtol=1e-4,
                               atol=1e-4)


def test_a_model_that_counts_steps_refuses_more_than_float32_counts(folder: Path,
                                                                    capsys) -> None:
    """Spike counts are float32 sums over the steps: exact up to 2^24 steps only."""
    snn = convert(mlp_model(SIZES, seed=1), _x(), spike_counts=True, progress=False)
    with pytest.raises(OnnxSnnError, match=re.escape(f"exact up to T = {MAX_COUNTED_STEPS:,}")):
        SpikingSession(snn.model).run(_x(2), MAX_COUNTED_STEPS + 1)
    plain = convert(mlp_model(SIZES, seed=1), _x(), progress=False)
    with pytest.raises(OnnxSnnError) as refused:  # refused for memory, not for counting
        SpikingSession(plain.model, memory_limit="1MB").run(_x(2), MAX_COUNTED_STEPS + 1)
    assert "exact up to" not in str(refused.value)


# --------------------------------------------------------------------------- the Python API

class _NoneNeurons(NeuronFactory):
    def create(self, scale=None):
        return None


class _NumberNeurons(NeuronFactory):
    def create(self, scale=None):
        return 42


class _NoneHooks(HookFactory):
    def create(self):
        return None


API_MISUSE = {
    "neuron-factory-creates-none": (dict(neuron_factory=_NoneNeurons()),
                                    "neuron_factory.create() must return a Neuron"),
    "neuron-factory-creates-a-number": (dict(neuron_factory=_NumberNeurons()), "got 42"),
    "hook-factory-creates-none": (dict(hook_factory=_NoneHooks()),
                                  "hook_factory.create() must return a Collector"),
    "factories-returns-one-factory": (dict(factories=lambda node: HookFactory()),
                                      "factories('relu0') must return"),
    "factories-returns-a-string": (dict(factories=lambda node: "max"), "got 'max'"),
    "cluster-is-a-string": (dict(cluster="local"), "cluster must be"),
    "cluster-is-a-number": (dict(cluster=4), "got 4"),
}


@pytest.mark.parametrize("name", list(API_MISUSE))
def test_convert_refuses_wrong_kinds_of_arguments(name: str) -> None:
    """Each used to raise a raw AttributeError or TypeError deep inside."""
    settings, needle = API_MISUSE[name]
    with pytest.raises(OnnxSnnError, match=re.escape(needle)):
        convert(mlp_model(SIZES, seed=1), _x(), progress=False, **settings)


def test_evaluate_refuses_a_cluster_that_is_not_one() -> None:
    snn = convert(mlp_model(SIZES, seed=1), _x(), progress=False)
    with pytest.raises(OnnxSnnError, match="cluster must be"):
        snn_accuracy(snn.model, _x(), np.zeros(20, np.int64), [2], cluster="local")


# --------------------------------------------------------------------------- causes kept

def test_an_error_keeps_its_cause() -> None:
    """onnxruntime's own exception stays as the cause of the one-line error."""
    model = _edited(_unknown_attribute)
    with pytest.raises(OnnxSnnError, match="onnxruntime cannot load the model") as refused:
        create_session(model)
    assert refused.value.__cause__ is not None
    assert not isinstance(refused.value.__cause__, OnnxSnnError)


def test_verbose_shows_the_cause(folder: Path, capsys) -> None:
    """A converted model that onnxruntime refuses: one line without --verbose; with it,
    the traceback down to onnxruntime's own exception."""
    snn = convert(mlp_model(SIZES, seed=1), _x(), progress=False).model
    next(n for n in snn.graph.node if n.op_type == "Gemm").attribute.append(
        helper.make_attribute("bogus", 3))
    onnx.save(snn, folder / "snn.onnx")
    np.savez(folder / "test.npz", x=_x(), y=np.zeros(20, np.int64))
    argv = ["eval", folder / "snn.onnx", "--data", folder / "test.npz", "--timesteps", "2"]
    expect_error(argv, capsys, [folder], ["onnxruntime cannot load", "bogus"])
    done = run_script([*argv, "--verbose"], folder)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "direct cause" in done.stderr, done.stderr


def test_a_session_refuses_native_that_is_not_a_bool() -> None:
    snn = convert(mlp_model(SIZES, seed=1), _x(), progress=False)
    with pytest.raises(OnnxSnnError, match="native must be True or False, got 'yes'"):
        SpikingSession(snn.model, native="yes")


def test_accuracy_takes_one_t_or_several_and_refuses_none() -> None:
    """One T is the list of it (it used to be a TypeError: 'int' is not iterable)."""
    snn = convert(mlp_model(SIZES, seed=1), _x(), progress=False).model
    labels = np.arange(20) % 3
    assert snn_accuracy(snn, _x(), labels, 4) == snn_accuracy(snn, _x(), labels, [4, 4])
    with pytest.raises(OnnxSnnError, match="at least one number of time steps"):
        snn_accuracy(snn, _x(), labels, [])
    with pytest.raises(OnnxSnnError, match="time steps must be a positive integer, got 'four'"):
        snn_accuracy(snn, _x(), labels, "four")


def test_a_reader_whose_get_next_is_not_a_method_is_refused() -> None:
    """It used to be a raw TypeError from iter()."""
    class Reader:
        get_next = 5

    with pytest.raises(OnnxSnnError, match="get_next must be a method .* got 5"):
        convert(mlp_model(SIZES, seed=1), Reader(), progress=False)


@pytest.mark.parametrize("path", [42, None, ["snn.onnx"]])
def test_save_refuses_a_path_that_is_not_one(path) -> None:
    """It used to be a raw TypeError from os.fspath."""
    snn = convert(mlp_model(SIZES, seed=1), _x(), progress=False)
    with pytest.raises(OnnxSnnError, match="output path must be a str or os.PathLike"):
        snn.save(path)


def test_a_streaming_session_that_counts_refuses_a_step_past_float32_counts() -> None:
    """Stepping online past 2^24 steps would saturate the float32 counts silently;
    the session refuses the step instead, and reset() starts the count again."""
    from onnx_snn.export.formats import export_format
    from onnx_snn.runtime.streaming import StreamingSession

    snn = convert(mlp_model(SIZES, seed=1), _x(), spike_counts=True, progress=False).model
    session = StreamingSession(export_format(snn, "streaming"))
    first = session.step(_x(2))
    session._steps = MAX_COUNTED_STEPS  # as after 2^24 steps, without running them
    with pytest.raises(OnnxSnnError, match=re.escape(f"exact up to {MAX_COUNTED_STEPS:,} steps")):
        session.step(_x(2))
    session.reset()
    for name, value in session.step(_x(2)).items():
        np.testing.assert_array_equal(value, first[name])
