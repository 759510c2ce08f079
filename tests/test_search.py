"""``--preset auto`` (``onnx_snn.search``): what it tries, how it scores, what it keeps.

The scores are checked against an agreement computed here from the SNN's per-step
outputs and the ANN run directly in onnxruntime; the choice against the trials."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import mlp_model
from test_convert import cnn_model

from onnx_snn import NeuronFactory, OnnxSnnError, SpikingSession, convert
from onnx_snn.cli import main
from onnx_snn.config import PRESETS
from onnx_snn.measure.agreement import ann_agreement
from onnx_snn.search import SEARCHED_MAXPOOL, candidates


def maxpool_cnn(seed: int = 3) -> onnx.ModelProto:
    """``cnn_model`` with a MaxPool where it has an AveragePool."""
    model = cnn_model(seed)
    for node in model.graph.node:
        if node.op_type == "AveragePool":
            node.op_type = "MaxPool"
    return model


def data(rows: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (rows, 2, 8, 8)).astype(np.float32)


def agreement_by_hand(snn: onnx.ModelProto, ann: onnx.ModelProto, x: np.ndarray,
                      steps: int) -> tuple[float, float]:
    """Argmax agreement of the summed outputs with the ANN, and Σ|mean − ANN| / Σ|ANN|."""
    per_step = SpikingSession(snn).run(x, steps).per_step.astype(np.float64)
    reference = ort.InferenceSession(ann.SerializeToString(),
                                     providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    agree = float((per_step.sum(axis=0).argmax(-1) == reference.argmax(-1)).mean())
    error = np.abs(per_step.mean(axis=0) - reference).sum() / np.abs(reference).sum()
    return agree, float(error)


def test_the_agreement_is_the_one_computed_by_hand() -> None:
    ann, x = maxpool_cnn(), data()
    snn = convert(ann, x, preset="best", progress=False).model
    measured = ann_agreement(snn, ann, x, 6, batch_size=20, max_samples=50)
    agree, error = agreement_by_hand(snn, ann, x[:50], 6)
    assert measured.samples == 50 and measured.output == "y"
    assert measured.agreement == pytest.approx(agree, abs=1e-12)
    assert measured.error == pytest.approx(error, rel=1e-6)  # batches of 20 vs 50: ulps


def test_candidates_vary_what_was_not_given() -> None:
    base = PRESETS["spikingjelly"].replace(target_timesteps=8)
    every = candidates(base, 8, set(), has_maxpool=True)
    assert len(every) == 1 + 3 * len(SEARCHED_MAXPOOL)  # classic + 3 hooks x the policies
    assert {c.config.maxpool for c in every} == set(SEARCHED_MAXPOOL)
    assert len(candidates(base, 8, set(), has_maxpool=False)) == 4
    fixed_pool = candidates(base.replace(maxpool="td"), 8, {"maxpool"}, has_maxpool=True)
    assert {c.config.maxpool for c in fixed_pool} == {"td"}
    given = NeuronFactory(v_init=0.25, max_spikes=4)
    burst = candidates(base.replace(neuron_factory=given), 8, {"neuron_factory"}, True)
    assert all(c.config.neuron_factory is given for c in burst)
    balancing = [c for c in burst if "balancing" in c.name]
    assert balancing and all(c.config.hook_factory.timesteps == 32 and  # 8 steps x 4 spikes
                             c.config.hook_factory.v_init == 0.25 for c in balancing)


def test_auto_keeps_the_best_trial_and_converts_it() -> None:
    ann, x = maxpool_cnn(), data()
    result = convert(ann, x, preset="auto", target_timesteps=4, progress=False)
    record = result.search
    assert len(record.trials) == 1 + 3 * len(SEARCHED_MAXPOOL)
    best = max(record.trials, key=lambda trial: trial.agreement.rank())
    assert record.chosen == best.name
    assert "auto chose " + best.name in record.summary()
    agree, error = agreement_by_hand(result.model, ann, x, 4)
    assert agree == pytest.approx(best.agreement.agreement, abs=1e-12)
    assert error == pytest.approx(best.agreement.error, rel=1e-6)
    assert result.report()["search"]["chosen"] == best.name


def test_auto_needs_a_target_and_data() -> None:
    ann, x = mlp_model([8, 6, 3]), np.ones((4, 8), np.float32)
    with pytest.raises(OnnxSnnError, match="preset auto needs a target T"):
        convert(ann, x, preset="auto", progress=False)
    with pytest.raises(OnnxSnnError, match="use it with preset auto"):
        convert(ann, x, target_timesteps=8, progress=False)
    result = convert(ann, x, progress=False)
    with pytest.raises(OnnxSnnError, match="not a saved calibration"):
        convert(ann, preset="auto", target_timesteps=8, calibration=result.calibration,
                progress=False)


def test_cli_auto_says_what_it_chose(tmp_path, capsys) -> None:
    ann, x = maxpool_cnn(), data(40)
    onnx.save(ann, tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x)
    status = main(["convert", str(tmp_path / "ann.onnx"), "--calib", str(tmp_path / "calib.npz"),
                   "-o", str(tmp_path / "snn.onnx"), "--preset", "auto",
                   "--target-timesteps", "4", "--maxpool", "td", "--no-progress",
                   "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert status == 0, out
    chosen = json.loads((tmp_path / "out.json").read_text())["search"]["chosen"]
    assert f"auto chose {chosen}: agreement" in out and chosen.endswith("maxpool td")
    status = main(["convert", str(tmp_path / "ann.onnx"), "--calib", str(tmp_path / "calib.npz"),
                   "-o", str(tmp_path / "other.onnx"), "--target-timesteps", "4"])
    assert status == 2  # bad usage
    assert "--target-timesteps is the T that --preset auto" in capsys.readouterr().err
