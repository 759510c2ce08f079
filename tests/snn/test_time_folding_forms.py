"""Graph forms the time folding meets in third-party nets (``onnx_snn.snn.time_folding``,
``onnx_snn.graph.batch_axes``, ``onnx_snn.io.constant_inputs``):

- inputs without a batch axis (a pitch net's scalar ``fmin``/``fmax``): given once,
  fed as they are at every step and in calibration;
- outputs whose batch axis is not the first (a time-major CTC output [steps, N,
  classes]), with static or dynamic widths, and with a declared output shape that
  contradicts the real one (ddddocr declares [1, seqlen] for [seq, 1, classes]).

The reference is the ANN run in onnxruntime on the same inputs; the SNN's output
averaged over T steps must approach it as T grows.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnx_snn
from onnx_snn import SpikingSession
from onnx_snn.errors import OnnxSnnError

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(4, 6)).astype(np.float32) * 0.8
W2 = RNG.normal(size=(6, 4)).astype(np.float32) * 0.5


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ann(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a declared output shape that lies: a warning
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _loads(snn: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(snn.SerializeToString(), providers=["CPUExecutionProvider"])


def _errors(per_step: np.ndarray, ann: np.ndarray, steps=(8, 256)) -> list[float]:
    """max |mean of the first T steps - ANN| / max |ANN|, for each T."""
    return [float(np.abs(per_step[:t].mean(axis=0) - ann).max() / np.abs(ann).max())
            for t in steps]


# --- inputs without a batch axis --------------------------------------------------

def scalar_input_model() -> onnx.ModelProto:
    """y = (Relu((x * gain) @ W1) @ W2) * gain + shift: the scalar ``gain`` is read
    both before the first neuron (the static part) and after the last; ``shift``
    is a scalar int64 setting, cast."""
    nodes = [helper.make_node("Mul", ["x", "gain"], ["xs"]),
             helper.make_node("MatMul", ["xs", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["b"]),
             helper.make_node("Mul", ["b", "gain"], ["c"]),
             helper.make_node("Cast", ["shift"], ["shift_f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["c", "shift_f"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                          helper.make_tensor_value_info("gain", TensorProto.FLOAT, []),
                          helper.make_tensor_value_info("shift", TensorProto.INT64, [])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                  {"w1": W1, "w2": W2})


def _settings(gain: float, shift: int = 3) -> dict:
    return {"gain": np.asarray(gain, np.float32), "shift": np.asarray(shift, np.int64)}


X = RNG.normal(size=(32, 4)).astype(np.float32)


@pytest.mark.parametrize("form", ["dicts", "dict", "npz", "column"])
def test_scalar_inputs_calibrate_convert_and_converge(form, tmp_path):
    ann = scalar_input_model()
    if form == "dicts":  # one batch at a time, with the scalars
        data = [{"x": X[i:i + 8], **_settings(1.5)} for i in range(0, 32, 8)]
    elif form == "dict":  # the scalars once, beside the samples
        data = {"x": X, **_settings(1.5)}
    elif form == "npz":  # members of the inputs' exact shapes
        data = tmp_path / "calib.npz"
        np.savez(data, x=X, **_settings(1.5))
    else:  # a column repeating one value per sample
        data = {"x": X, "gain": np.full(32, 1.5, np.float32), "shift": np.full(32, 3)}
    snn = onnx_snn.convert(ann, data, batch_size=8, progress=False).model
    inputs = {i.name: i.shape for i in _loads(snn).get_inputs()}
    assert inputs["gain"] == [] and inputs["shift"] == [] and inputs["x"] == ["S", "N", 4]
    session = SpikingSession(snn)
    for gain in (1.5, 0.7):  # a setting changed at run time is followed
        feed = {"x": X[:5], **_settings(gain)}
        per_step = session.run(feed, 256).per_step
        assert per_step.shape == (256, 5, 4)
        early, late = _errors(per_step, _ann(ann, feed))
        assert late < 0.05 and late < early, (gain, early, late)


def test_scalar_inputs_in_a_sequence():
    ann = scalar_input_model()
    snn = onnx_snn.convert(ann, {"x": X, **_settings(1.0)}, progress=False).model
    feed = {"x": np.repeat(X[None, :3], 128, axis=0), **_settings(1.0)}
    per_step = SpikingSession(snn).run(feed, sequence=True).per_step
    assert per_step.shape == (128, 3, 4)
    direct = SpikingSession(snn).run({"x": X[:3], **_settings(1.0)}, 128).per_step
    np.testing.assert_array_equal(per_step, direct)


def test_a_scalar_input_given_per_sample_with_different_values_is_refused():
    data = {"x": X, "gain": np.linspace(1, 2, 32, dtype=np.float32),
            "shift": np.asarray(3)}
    with pytest.raises(OnnxSnnError, match="'gain' has no batch axis .*32 different"):
        onnx_snn.convert(scalar_input_model(), data, progress=False)


# --- outputs with the batch on another axis ----------------------------------------

def time_major_model(length, declared) -> onnx.ModelProto:
    """x [N, L, 4] -> Relu(x @ W1) @ W2 -> Transpose: y [L, N, 4], declared ``declared``."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["b"]),
             helper.make_node("Transpose", ["b"], ["y"], perm=[1, 0, 2])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        ["N", length, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)],
                  {"w1": W1, "w2": W2})


SEQ = RNG.normal(size=(16, 5, 4)).astype(np.float32)


@pytest.mark.parametrize("length, declared", [
    (5, [5, "N", 4]),           # static: inferred and declared agree
    ("L", ["L", "N", 4]),       # a dynamic width besides the batch
    ("L", ["N", "seqlen"]),     # declared wrong (rank and batch axis), as ddddocr does
])
def test_time_major_output_keeps_its_batch_axis_and_converges(length, declared):
    ann = time_major_model(length, declared)
    snn = onnx_snn.convert(ann, SEQ, batch_size=4, progress=False).model
    output = _loads(snn).get_outputs()[0]
    assert len(output.shape) == 4 and output.shape[0] == "T" and output.shape[2] == "N"
    # a dynamic width runs at another length than calibrated (values from the same set)
    x = SEQ[:3] if length == 5 else np.concatenate([SEQ[:3], SEQ[3:6, :2]], axis=1)
    per_step = SpikingSession(snn).run(x, 256).per_step
    reference = _ann(ann, {"x": x})
    assert per_step.shape == (256, *reference.shape)  # [T, L, N, 4]
    early, late = _errors(per_step, reference)
    assert late < 0.05 and late < early, (early, late)


def lstm_model() -> onnx.ModelProto:
    """A time-major recurrent head, as in CRNN/CTC nets: x [N, L, 4] -> Relu(x @ W1)
    -> Transpose [L, N, 6] -> bidirectional LSTM -> [L, N, 2·3] -> MatMul: scores
    [L, N, 4], declared [1, "seqlen"] (wrong, as ddddocr's)."""
    hidden = 3
    w = RNG.normal(size=(2, 4 * hidden, 6)).astype(np.float32) * 0.4
    r = RNG.normal(size=(2, 4 * hidden, hidden)).astype(np.float32) * 0.4
    head = RNG.normal(size=(2 * hidden, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["t", "w", "rr"], ["h"], hidden_size=hidden,
                              direction="bidirectional"),          # [L, 2, N, 3]
             helper.make_node("Transpose", ["h"], ["hp"], perm=[0, 2, 1, 3]),
             helper.make_node("Shape", ["hp"], ["hs"], start=0, end=2),
             helper.make_node("Concat", ["hs", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["hp", "target"], ["hf"]),  # [L, N, 6]
             helper.make_node("MatMul", ["hf", "head"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        [1, "L", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seqlen"])],
                  {"w1": np.abs(W1), "w": w, "rr": r, "head": head,
                   "minus_one": np.array([-1], np.int64)})


def test_time_major_recurrent_output_with_dynamic_width_converges():
    ann = lstm_model()
    # exported at batch 1; calibrated in one batch (the conversion makes the batch
    # dynamic), so that the scales cover every sample
    snn = onnx_snn.convert(ann, SEQ, batch_size=len(SEQ), progress=False).model
    _loads(snn)
    x = np.concatenate([SEQ[2:3], SEQ[3:4, :4]], axis=1)  # another width than calibrated
    reference = _ann(ann, {"x": x})
    assert reference.shape == (9, 1, 4)
    per_step = SpikingSession(snn).run(x, 256).per_step
    assert per_step.shape == (256, 9, 1, 4)
    early, late = _errors(per_step, reference)
    assert late < 0.05 and late < early, (early, late)


def test_an_output_without_a_batch_axis_is_refused():
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("ReduceSum", ["r"], ["y"], keepdims=0,
                              noop_with_empty_axes=0)]
    ann = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], {"w1": W1})
    with pytest.raises(OnnxSnnError, match="output 'y' .*batch axis"):
        onnx_snn.convert(ann, X, progress=False)


def test_fixed_batch_ann_runs_in_chunks_with_constant_inputs_and_lying_outputs():
    """``AnnSession`` on a batch-1 export: constant inputs go whole with every chunk,
    and a time-major output declared [1, seqlen] is put back together on its real
    batch axis (axis 1)."""
    from onnx_snn.runtime.sessions import AnnSession
    scalar = scalar_input_model()
    scalar.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    feed = {"x": X[:3], **_settings(0.5)}
    rows = [_ann(scalar, {**feed, "x": X[i:i + 1]}) for i in range(3)]
    np.testing.assert_array_equal(AnnSession(scalar).run(feed)[0], np.concatenate(rows))
    recurrent = lstm_model()
    rows = [_ann(recurrent, {"x": SEQ[i:i + 1]}) for i in range(3)]
    np.testing.assert_array_equal(AnnSession(recurrent).run(SEQ[:3])[0],
                                  np.concatenate(rows, axis=1))


def test_scalar_inputs_in_the_standard_and_streaming_formats():
    """Every format feeds a constant input as it is: the streaming model, one step per
    call, gives the onnx-snn format's outputs step for step."""
    from onnx_snn.export.formats import to_standard, to_streaming
    from onnx_snn.runtime.streaming import StreamingSession

    snn = onnx_snn.convert(scalar_input_model(), {"x": X, **_settings(1.2)},
                           progress=False).model
    feed = {"x": X[:4], **_settings(1.2)}
    reference = SpikingSession(snn).run(feed, 16).per_step
    standard = SpikingSession(to_standard(snn)).run(feed, 16).per_step
    streamed = StreamingSession(to_streaming(snn)).run(feed, 16).per_step
    np.testing.assert_allclose(standard, reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(streamed, reference, rtol=1e-6, atol=1e-6)


def test_workers_count_rows_past_a_constant_input(tmp_path):
    """Sharding counts the samples of batched inputs, whichever member comes first."""
    from onnx_snn.io.data import input_specs
    from onnx_snn.io.shards import sample_count

    specs = input_specs(scalar_input_model())
    path = tmp_path / "data.npz"
    np.savez(path, gain=np.float32(1.0), shift=np.int64(3), x=X)  # a scalar member first
    assert sample_count(str(path), specs) == len(X)
    assert sample_count({"gain": np.float32(1.0), "x": X}, specs) == len(X)
