"""``eval`` and ``report`` on outputs of any task (issue 19): class scores with singleton
axes ([N, C, 1, 1], [N, 1, C]), one-hot labels, ANNs with a fixed batch, and the
fidelity view of outputs that are not class scores.

Every number is checked against an independent answer: the ANN run directly in
onnxruntime (row by row for a fixed batch), the spiking session's own per-step
outputs, and numpy formulas written here.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model
from onnx import TensorProto, helper

from onnx_snn import SpikingSession, convert
from onnx_snn.cli import main
from onnx_snn.measure.agreement import ann_fidelity
from onnx_snn.measure.report import make_report
from onnx_snn.runtime.sessions import AnnSession

FEATURES, CLASSES = 6, 6


def mlp(tail=(), output=("z", ["N", CLASSES]), batch="N", seed: int = 0) -> onnx.ModelProto:
    """x [batch, 6] -> Gemm -> Relu -> Gemm z [batch, 6] -> the ``tail`` nodes
    ((node, initializers) pairs) -> the output ``output`` (name, shape)."""
    rng = np.random.default_rng(seed)
    inits = {"w0": (rng.normal(size=(FEATURES, 16)) / np.sqrt(FEATURES)).astype(np.float32),
             "b0": (rng.normal(size=16) * 0.1 + 0.1).astype(np.float32),
             "w1": (rng.normal(size=(16, CLASSES)) / 4).astype(np.float32),
             "b1": (rng.normal(size=CLASSES) * 0.1).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0"),
             helper.make_node("Relu", ["h"], ["r"], name="relu0"),
             helper.make_node("Gemm", ["r", "w1", "b1"], ["z"], name="fc1")]
    for node, more in tail:
        nodes.append(node)
        inits.update(more)
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            [batch, FEATURES])],
                      [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
                      inits)


def reshaped(shape: list) -> tuple:
    """A tail reshaping z [N, 6] to ``shape`` (0 keeps N), as output 'y'."""
    return ((helper.make_node("Reshape", ["z", "shape"], ["y"], name="tail"),
             {"shape": np.array(shape, np.int64)}),)


def run_ann(model: onnx.ModelProto, x: np.ndarray, rows: int | None = None) -> np.ndarray:
    """The ANN's first output in plain onnxruntime, ``rows`` rows at a time."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = rows or len(x)
    return np.concatenate([session.run(None, {"x": x[i:i + rows]})[0]
                           for i in range(0, len(x), rows)])


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(40, FEATURES)).astype(np.float32)


def numpy_accuracy(per_step: np.ndarray, labels: np.ndarray, t: int) -> float:
    """Accuracy after t steps: argmax of the per-step outputs summed over 1..t."""
    scores = per_step[:t].sum(axis=0).reshape(len(labels), -1)
    return float((scores.argmax(axis=1) == labels).mean())


# --- 1. class scores with singleton axes ----------------------------------------------------

@pytest.mark.parametrize("shape", [[0, CLASSES, 1, 1], [0, 1, CLASSES]])
def test_eval_scores_class_outputs_with_singleton_axes(tmp_path, capsys, x, shape) -> None:
    dims = ["N", *[CLASSES if d == CLASSES else 1 for d in shape[1:]]]
    ann = mlp(reshaped(shape), ("y", dims))
    snn = convert(ann, x, progress=False)
    labels = run_ann(mlp(), x).argmax(axis=1)  # the ANN's own classes, from its plain form
    labels[:5] = (labels[:5] + 1) % CLASSES    # and a few wrong ones
    onnx.save(ann, tmp_path / "ann.onnx")
    snn.save(tmp_path / "snn.onnx")
    np.savez(tmp_path / "test.npz", x=x, y=labels)
    assert main(["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "2,16",
                 "--json", str(tmp_path / "eval.json")]) == 0
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["output"] == "y"
    ann_scores = run_ann(ann, x).reshape(len(x), CLASSES)
    assert data["ann_accuracy"] == pytest.approx((ann_scores.argmax(1) == labels).mean())
    per_step = SpikingSession(snn.model).run(x, 16).outputs["y"]
    for t in (2, 16):
        assert data["snn_accuracy"][str(t)] == pytest.approx(numpy_accuracy(per_step, labels, t))

    report = make_report(snn.model, x, labels, ann=ann, timesteps=16, progress=False)
    assert report.output == "y"
    assert report.ann_accuracy == pytest.approx((ann_scores.argmax(1) == labels).mean())
    assert report.accuracy_curve == pytest.approx(
        [numpy_accuracy(per_step, labels, t) for t in range(1, 17)])


# --- 2. one-hot labels ----------------------------------------------------------------------

def test_one_hot_labels_are_read_and_bad_rows_refused(tmp_path, capsys, x) -> None:
    ann = mlp()
    snn = convert(ann, x, progress=False)
    labels = np.arange(len(x)) % CLASSES
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]
    onnx.save(ann, tmp_path / "ann.onnx")
    snn.save(tmp_path / "snn.onnx")
    np.savez(tmp_path / "test.npz", x=x, y=one_hot)
    argv = ["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
            "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "8", "--batch-size", "16",
            "--json", str(tmp_path / "eval.json")]
    assert main(argv) == 0
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["ann_accuracy"] == pytest.approx((run_ann(ann, x).argmax(1) == labels).mean())
    per_step = SpikingSession(snn.model).run(x, 8).outputs["z"]
    assert data["snn_accuracy"]["8"] == pytest.approx(numpy_accuracy(per_step, labels, 8))

    bad = one_hot.copy()
    bad[21, (labels[21] + 1) % CLASSES] = 1  # two 1s in row 21 (the second batch)
    np.savez(tmp_path / "test.npz", x=x, y=bad)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-snn: error:"), err
    assert "test.npz" in err[0] and "row 21" in err[0] and "one-hot" in err[0], err


# --- 3. an ANN with a fixed batch -----------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 4])
def test_eval_and_report_run_a_fixed_batch_ann_in_chunks(tmp_path, capsys, x, batch) -> None:
    ann = mlp(output=("z", [batch, CLASSES]), batch=batch)
    snn = convert(ann, x[:batch * 4], progress=False)   # convert makes the batch dynamic
    labels = np.arange(len(x)) % CLASSES
    onnx.save(ann, tmp_path / "ann.onnx")
    snn.save(tmp_path / "snn.onnx")
    np.savez(tmp_path / "test.npz", x=x[:38], y=labels[:38])  # 38: a short last chunk
    # the same weights with a dynamic batch, run on all 38 rows at once
    expected = (run_ann(mlp(), x[:38]).argmax(1) == labels[:38]).mean()
    assert main(["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "4", "--batch-size", "10",
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["ann_accuracy"] == \
        pytest.approx(expected)
    assert main(["report", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "4", "--batch-size", "10",
                 "-o", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["ann_accuracy"] == pytest.approx(expected)
    assert all(entry["rate_vs_ann_r"] is not None for entry in data["layers"])


def test_chunked_ann_puts_a_moved_batch_axis_back_together(x) -> None:
    """A fixed-batch ANN whose output carries the batch on axis 1 ([S, 1, C], a CTC
    sequence): the chunks go back together along axis 1, as a row-by-row run says."""
    tail = ((helper.make_node("Reshape", ["z", "shape"], ["s"]),
             {"shape": np.array([1, 3, 2], np.int64)}),
            (helper.make_node("Transpose", ["s"], ["y"], perm=[1, 0, 2]), {}))
    ann = mlp(tail, ("y", [3, 1, 2]), batch=1)
    session = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(7)],
                              axis=1)
    chunked = AnnSession(ann)
    assert chunked.fixed_batch == 1
    np.testing.assert_array_equal(chunked.run({"x": x[:7]})[0], expected)


# --- 4. outputs that are not class scores: the fidelity view --------------------------------

def numpy_fidelity(per_step: np.ndarray, reference: np.ndarray, t: int) -> tuple:
    """(relative error Σ|mean − ANN| / Σ|ANN|, Pearson r, argmax agreement on the last
    axis or None) of the SNN's output averaged over steps 1..t."""
    mean = per_step[:t].astype(np.float64).mean(axis=0)
    ref = reference.astype(np.float64)
    error = np.abs(mean - ref).sum() / np.abs(ref).sum()
    r = np.corrcoef(mean.ravel(), ref.ravel())[0, 1]
    agree = (mean.argmax(-1) == ref.argmax(-1)).mean() if ref.shape[-1] >= 2 else None
    return error, r, agree


def two_task_model() -> onnx.ModelProto:
    """A sequence output 'seq' [N, 3, 2] (z reshaped) and a regression 'value' [N, 1]."""
    model = mlp(reshaped([0, 3, 2]), ("y", ["N", 3, 2]))
    graph = model.graph
    graph.output[0].name = "seq"
    graph.node[-1].output[0] = "seq"
    graph.node.append(helper.make_node("ReduceSum", ["z", "axes"], ["value"], keepdims=1))
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "axes"))
    graph.output.append(helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1]))
    onnx.checker.check_model(model)
    return model


def test_eval_and_report_compare_every_output_with_the_ann(tmp_path, capsys, x) -> None:
    ann = two_task_model()
    snn = convert(ann, x, progress=False)
    onnx.save(ann, tmp_path / "ann.onnx")
    snn.save(tmp_path / "snn.onnx")
    np.savez(tmp_path / "test.npz", x=x)  # no labels, and nothing to score anyway
    session = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"])
    references = dict(zip(["seq", "value"], session.run(["seq", "value"], {"x": x})))
    per_step = SpikingSession(snn.model).run(x, 32).outputs

    assert main(["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "4,32", "--batch-size",
                 "16", "--json", str(tmp_path / "eval.json")]) == 0
    printed = capsys.readouterr().out
    assert "no output holds class scores" in printed and "rel. error" in printed
    data = json.loads((tmp_path / "eval.json").read_text())["fidelity"]
    assert data["timesteps"] == [4, 32] and data["samples"] == len(x)
    for name in ("seq", "value"):
        for t in (4, 32):
            error, r, agree = numpy_fidelity(per_step[name], references[name], t)
            got = data["outputs"][name]
            assert got["error"][str(t)] == pytest.approx(error, rel=1e-9)
            assert got["correlation"][str(t)] == pytest.approx(r, rel=1e-9)
            assert got["agreement"][str(t)] == (None if agree is None else pytest.approx(agree))
    assert data["outputs"]["seq"]["error"]["32"] < data["outputs"]["seq"]["error"]["4"] < 1

    assert main(["report", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "8", "-o",
                 str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["accuracy_curve"] == [] and report["ann_accuracy"] is None
    assert report["fidelity"]["timesteps"] == [1, 2, 4, 8]
    per_step8 = SpikingSession(snn.model).run(x, 8).outputs
    for t in (1, 2, 4, 8):
        error, r, _ = numpy_fidelity(per_step8["seq"], references["seq"], t)
        assert report["fidelity"]["outputs"]["seq"]["error"][str(t)] == pytest.approx(error)
        if np.isfinite(r):
            assert report["fidelity"]["outputs"]["seq"]["correlation"][str(t)] == \
                pytest.approx(r)
    summary = (tmp_path / "out" / "report.md").read_text()
    assert "Outputs against the ANN" in summary and "SNN accuracy" not in summary
    assert not (tmp_path / "out" / "accuracy.png").exists()


def test_fidelity_needs_the_ann(tmp_path, capsys, x) -> None:
    snn = convert(two_task_model(), x, progress=False)
    snn.save(tmp_path / "snn.onnx")
    np.savez(tmp_path / "test.npz", x=x)
    assert main(["eval", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-snn: error:") and "--ann" in err[0], err


def test_ann_fidelity_of_class_scores_matches_numpy(x) -> None:
    """The API on a classifier with labels-free data: argmax agreement of [N, C, 1, 1]
    scores is along the classes, not along a singleton axis."""
    ann = mlp(reshaped([0, CLASSES, 1, 1]), ("y", ["N", CLASSES, 1, 1]))
    snn = convert(ann, x, progress=False)
    fidelity = ann_fidelity(snn.model, ann, x, [3, 12], batch_size=9)
    per_step = SpikingSession(snn.model).run(x, 12).outputs["y"].reshape(12, len(x), CLASSES)
    reference = run_ann(ann, x).reshape(len(x), CLASSES)
    for k, t in enumerate([3, 12]):
        error, r, agree = numpy_fidelity(per_step, reference, t)
        assert fidelity.outputs["y"]["error"][k] == pytest.approx(error, rel=1e-9)
        assert fidelity.outputs["y"]["correlation"][k] == pytest.approx(r, rel=1e-9)
        assert fidelity.outputs["y"]["agreement"][k] == pytest.approx(agree)
