"""``onnx_snn.measure.report`` and ``onnx-snn report`` against independent answers
(docs/semantics.md, "Efficiency metrics").

Each test checks the report's numbers against something computed another way:
counts done by hand, a numpy simulation of the spiking net, the spiking
session's own per-step outputs, the ANN run directly in onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_model, mlp_model
from onnx import TensorProto, helper, numpy_helper

from onnx_snn import SpikingSession, convert, simulate_if
from onnx_snn.cli import main
from onnx_snn.measure.report import ENERGY_PJ, make_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("accuracy.png", "firing_rates.png", "sops_vs_macs.png", "rate_vs_ann.png")


# --- 1. hand-counted SOPs, MACs and energy --------------------------------------------------

def conv_gemm_model() -> onnx.ModelProto:
    """x [N,1,3,3] -> Conv c1 (1->2, 3x3, pads 1, zero weight, bias [1, 0.5]) -> Relu r1
    -> Flatten -> Gemm g1 (18->4, transB) -> y [N,4].

    The zero weight makes the Conv output its bias everywhere: channel 0 is 1.0 and
    channel 1 is 0.5 at all 9 positions, whatever x is. Gemm row 0 sums channel 0's
    outputs, the other rows are zero, so class 0 wins whenever channel 0 fires.
    """
    gemm_weight = np.zeros((4, 18), np.float32)  # transB: [out_features, in_features]
    gemm_weight[0, :9] = 1.0  # Flatten of [2,3,3] puts channel 0 first
    gemm_weight[1, 9:] = 0.5
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="r1"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="g1", transB=1),
    ]
    return make_model(nodes,
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 3, 3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      {"w": np.zeros((2, 1, 3, 3), np.float32),
                       "b": np.array([1.0, 0.5], np.float32),
                       "gw": gemm_weight, "gb": np.zeros(4, np.float32)})


@pytest.mark.parametrize("samples", [1, 3])
def test_hand_counted_sops_macs_and_energy(samples) -> None:
    """Counts by hand, T = 4, Max calibration on x = ones (scale of r1 = max = 1.0, so the
    input gain θ/s = 1), IF neurons θ = 1, soft reset, v starting at 0.

    Neurons of r1: 2 channels × 3 × 3 = 18.
    Channel 0 gets 1.0 per step: h = 1 at every step, fires, resets to 0 -> 4 spikes.
    Channel 1 gets 0.5 per step: h = 0.5, 1.0 (fire, v = 0), 0.5, 1.0 (fire) -> 2 spikes
    (steps 2 and 4). Spikes per sample: 9·4 + 9·2 = 54.
    Firing rate: 54 / (18 neurons · 4 steps) = 0.75.
    SOPs: r1 feeds Gemm g1 only (through Flatten), fan-out = out_features = 4 -> 54·4 = 216.
    ANN MACs of the layers r1 feeds: g1 = 18 in × 4 out = 72.
    Conv c1 reads x (analog input): 18 outputs × (1 input channel × 3 × 3) = 162 MACs.
    All ANN MACs: 162 + 72 = 234; analog MACs in the SNN: 162.
    E_ANN = MAC · 234; E_SNN = MAC · 162 + AC · 216
      fp32: 4.6·234 = 1076.4 pJ,   4.6·162 + 0.9·216 = 745.2 + 194.4 = 939.6 pJ
      fp16: 1.5·234 = 351.0,       1.5·162 + 0.4·216 = 243.0 + 86.4 = 329.4
      int8: 0.23·234 = 53.82,      0.23·162 + 0.03·216 = 37.26 + 6.48 = 43.74
    The numbers are per sample, so they are the same for 1 or 3 identical samples.
    Rate × scale per neuron is 1.0 (channel 0) and 0.5 (channel 1), exactly the ANN
    activations, so r = 1. Class 0 gets 9 per step from channel 0 from step 1 on: the
    SNN is right at every t, like the ANN.
    """
    # the spike trains counted above, as the numpy reference of the IF dynamics has them
    trains = simulate_if(np.tile(np.array([1.0, 0.5], np.float32), (4, 1)))
    assert trains.T.tolist() == [[1, 1, 1, 1], [0, 1, 0, 1]]

    ann = conv_gemm_model()
    snn = convert(ann, np.ones((1, 1, 3, 3), np.float32), progress=False)
    assert [(layer.node, float(layer.scale)) for layer in snn.layers] == [("r1", 1.0)]
    x = np.ones((samples, 1, 3, 3), np.float32)
    y = np.zeros(samples, np.int64)

    hand = {"fp32": (4.6 * 234, 4.6 * 162 + 0.9 * 216),
            "fp16": (1.5 * 234, 1.5 * 162 + 0.4 * 216),
            "int8": (0.23 * 234, 0.23 * 162 + 0.03 * 216)}
    assert hand["fp32"] == pytest.approx((1076.4, 939.6), abs=1e-9)
    assert hand["fp16"] == pytest.approx((351.0, 329.4), abs=1e-9)
    assert hand["int8"] == pytest.approx((53.82, 43.74), abs=1e-9)
    assert ENERGY_PJ == {"fp32": (4.6, 0.9), "fp16": (1.5, 0.4), "int8": (0.23, 0.03)}

    for precision, (ann_pj, snn_pj) in hand.items():
        report = make_report(snn.model, x, y, ann=ann, timesteps=4, precision=precision,
                             progress=False)
        assert report.timesteps == 4 and report.samples == samples
        [layer] = report.layers
        assert layer.node == "r1"
        assert layer.neurons == 18
        assert layer.spikes == 54
        assert layer.firing_rate == pytest.approx(0.75, abs=1e-12)
        assert layer.sops == 216
        assert layer.ann_macs == 72
        assert layer.rate_vs_ann_r == pytest.approx(1.0, abs=1e-9)
        assert report.totals["ann_macs"] == 234
        assert report.totals["analog_macs"] == 162
        assert report.totals["sops"] == 216
        assert report.totals["sop_mac_ratio"] == pytest.approx(216 / 234, abs=1e-12)
        assert report.energy["precision"] == precision
        assert report.energy["ann_pj"] == pytest.approx(ann_pj, abs=1e-9)
        assert report.energy["snn_pj"] == pytest.approx(snn_pj, abs=1e-9)
        assert report.totals["energy_ratio"] == pytest.approx(snn_pj / ann_pj, abs=1e-12)
        assert report.accuracy_curve == [1.0] * 4
        assert report.ann_accuracy == 1.0


# --- a random MLP and a numpy simulation of its spiking version ------------------------------

SIZES = [6, 12, 8, 3]


@pytest.fixture(scope="module")
def mlp():
    """The ANN, its Max-calibrated SNN, test inputs, and labels the ANN gets ~80 % right."""
    rng = np.random.default_rng(7)
    ann = mlp_model(SIZES, seed=3)
    calib = rng.normal(size=(200, SIZES[0])).astype(np.float32)
    snn = convert(ann, calib, progress=False)
    x = rng.normal(size=(40, SIZES[0])).astype(np.float32)
    logits = ort.InferenceSession(ann.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y = logits.argmax(axis=1)
    flip = rng.random(len(y)) < 0.25
    y[flip] = (y[flip] + 1) % SIZES[-1]  # some labels the ANN gets wrong
    return ann, snn, x, y.astype(np.int64)


def simulate_mlp(ann: onnx.ModelProto, snn, x: np.ndarray, timesteps: int) -> list[np.ndarray]:
    """Spikes per layer [T, N, F] of the converted MLP, in numpy float32, step by step.

    Per step t: layer-l input current = (previous output @ W_l + b_l) · gain_l, with
    gain_l = float32(θ/s_l) read from the model's ``<relu>__input_gain`` initializer
    (θ = 1); IF with soft reset from v = 0 (as ``simulate_if``); the layer's output is
    spikes · s_l. The first layer's input is x at every step (direct encoding).
    """
    weights = {t.name: numpy_helper.to_array(t) for t in ann.graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in snn.model.graph.initializer}
    layers = snn.layers
    gains = [np.float32(inits[f"{layer.node}__input_gain"]) for layer in layers]
    assert gains == [np.float32(1.0 / float(layer.scale)) for layer in layers]
    scales = [np.float32(layer.scale) for layer in layers]
    theta = np.float32(1.0)
    potentials = [np.zeros((len(x), n), np.float32) for n in SIZES[1:-1]]
    spikes = [np.zeros((timesteps, len(x), n), np.float32) for n in SIZES[1:-1]]
    for t in range(timesteps):
        current = x
        for i, gain in enumerate(gains):
            z = (current @ weights[f"w{i}"] + weights[f"b{i}"]).astype(np.float32)
            h = potentials[i] + z * gain
            fired = (h >= theta).astype(np.float32)
            potentials[i] = h - fired * theta
            spikes[i][t] = fired
            current = fired * scales[i]
    return spikes


def test_every_spike_of_a_burst_counts() -> None:
    """The model above with burst neurons of up to B = 4 spikes a step (T = 4, scale 1):
    one spike stands for 1/4, so the input gain is θ·B/s = 4. Channel 0 gets 4 per step
    -> 4 spikes every step, 16 per neuron; channel 1 gets 2 -> 2 a step, 8 per neuron.
    Spikes per sample: 9·16 + 9·8 = 216, SOPs 216·4 = 864 (fan-out 4), 3 spikes per
    neuron and step. Rate × spike value: 16/4·1/4 = 1.0 and 8/4·1/4 = 0.5, the ANN's."""
    from onnx_snn import NeuronFactory

    ann = conv_gemm_model()
    snn = convert(ann, np.ones((1, 1, 3, 3), np.float32),
                  neuron_factory=NeuronFactory(max_spikes=4), progress=False)
    x, y = np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.int64)
    [layer] = make_report(snn.model, x, y, ann=ann, timesteps=4, progress=False).layers
    assert (layer.spikes, layer.sops, layer.neurons) == (216, 864, 18)
    assert layer.firing_rate == pytest.approx(3.0, abs=1e-12)
    assert layer.rate_vs_ann_r == pytest.approx(1.0, abs=1e-9)


# --- 2. firing rates against the numpy simulation --------------------------------------------

def test_firing_rates_match_a_numpy_simulation(mlp) -> None:
    """Rates of make_report = spikes / (neurons · T · samples) of the numpy simulation.

    The simulation does the matrix products in numpy, onnxruntime in MLAS; their float32
    sums may round differently in the last bit, and a potential that lands exactly on
    the threshold can then fire one step earlier or later. One such flip moves a rate by
    1 / (samples · neurons · T) = 1 / (40 · 12 · 16) ≈ 1.3e-4, so 1e-3 allows a few flips
    and nothing more; in practice the counts agree exactly (checked below on SOPs too).
    """
    ann, snn, x, y = mlp
    T = 16
    report = make_report(snn.model, x, y, timesteps=T, progress=False)
    simulated = simulate_mlp(ann, snn, x, T)
    assert [layer.node for layer in report.layers] == ["relu0", "relu1"]
    for layer, spikes, neurons, fan_out in zip(report.layers, simulated, SIZES[1:-1],
                                              SIZES[2:]):
        assert layer.neurons == neurons
        expected_rate = spikes.sum() / (len(x) * neurons * T)
        assert 0.02 < expected_rate < 0.98  # the layer is neither silent nor saturated
        assert layer.firing_rate == pytest.approx(expected_rate, abs=1e-3)
        # SOPs = spikes per sample × out_features of the next Gemm
        assert layer.sops == pytest.approx(spikes.sum() / len(x) * fan_out,
                                           abs=1e-3 * neurons * T * fan_out)
        assert layer.ann_macs == neurons * fan_out
    first_macs = 6 * 12
    all_macs = 6 * 12 + 12 * 8 + 8 * 3  # fc0, fc1, fc2: 72 + 96 + 24 = 192
    assert report.totals["ann_macs"] == all_macs
    assert report.totals["analog_macs"] == first_macs  # only fc0 reads analog input
    sops = sum(layer.sops for layer in report.layers)
    assert report.energy["ann_pj"] == pytest.approx(4.6 * all_macs, abs=1e-9)
    assert report.energy["snn_pj"] == pytest.approx(4.6 * first_macs + 0.9 * sops, abs=1e-9)


# --- 3. rate × scale against the ANN activation ----------------------------------------------

def test_rates_follow_the_ann_at_large_t(mlp) -> None:
    ann, snn, x, y = mlp
    report = make_report(snn.model, x, y, ann=ann, timesteps=256, progress=False)
    assert all(layer.rate_vs_ann_r > 0.98 for layer in report.layers), \
        [layer.rate_vs_ann_r for layer in report.layers]
    assert all(layer.rate_vs_ann_r <= 1.0 + 1e-12 for layer in report.layers)
    without = make_report(snn.model, x, y, timesteps=8, progress=False)
    assert without.ann_accuracy is None
    assert all(layer.rate_vs_ann_r is None for layer in without.layers)


# --- 4. accuracy curve and ANN accuracy ------------------------------------------------------

def test_accuracy_curve_matches_the_session_and_the_ann(mlp) -> None:
    ann, snn, x, y = mlp
    T = 16
    report = make_report(snn.model, x, y, ann=ann, timesteps=T, progress=False)
    per_step = SpikingSession(snn.model).run(x, T).per_step  # [T, N, classes]
    expected = (np.cumsum(per_step, axis=0).argmax(axis=-1) == y).sum(axis=1) / len(y)
    assert len(report.accuracy_curve) == T
    assert report.accuracy_curve == expected.tolist()
    assert len(set(report.accuracy_curve)) > 1  # the curve does move over time

    logits = ort.InferenceSession(ann.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ann_accuracy = float((logits.argmax(axis=1) == y).mean())
    assert 0.5 < ann_accuracy < 1.0  # the labels are partly wrong on purpose
    assert report.ann_accuracy == pytest.approx(ann_accuracy, abs=1e-12)


# --- 5. batch size does not change the numbers ----------------------------------------------

def test_batch_size_does_not_change_the_numbers(mlp) -> None:
    ann, snn, x, y = mlp
    small = make_report(snn.model, x, y, ann=ann, timesteps=16, batch_size=3, progress=False)
    whole = make_report(snn.model, x, y, ann=ann, timesteps=16, batch_size=1000, progress=False)
    assert small.samples == whole.samples == len(x)
    assert small.accuracy_curve == pytest.approx(whole.accuracy_curve, abs=1e-9)
    assert small.ann_accuracy == pytest.approx(whole.ann_accuracy, abs=1e-9)
    for a, b in zip(small.layers, whole.layers, strict=True):
        assert a.node == b.node and a.neurons == b.neurons and a.ann_macs == b.ann_macs
        assert a.firing_rate == pytest.approx(b.firing_rate, abs=1e-9)
        assert a.spikes == pytest.approx(b.spikes, abs=1e-9)
        assert a.sops == pytest.approx(b.sops, abs=1e-9)
        assert a.rate_vs_ann_r == pytest.approx(b.rate_vs_ann_r, abs=1e-9)
    assert small.energy["precision"] == whole.energy["precision"] == "fp32"
    for key in ("ann_pj", "snn_pj"):
        assert small.energy[key] == pytest.approx(whole.energy[key], abs=1e-9)
    assert small.totals == pytest.approx(whole.totals, abs=1e-9)


# --- 6. the command line ---------------------------------------------------------------------

@pytest.fixture
def files(tmp_path, mlp):
    ann, snn, x, y = mlp
    onnx.save(ann, tmp_path / "ann.onnx")
    snn.save(tmp_path / "snn.onnx")
    np.savez(tmp_path / "test.npz", x=x, y=y)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    return tmp_path


def test_cli_report_writes_json_plots_and_summary(files, mlp, capsys) -> None:
    ann, snn, x, y = mlp
    out = files / "out"
    assert main(["report", str(files / "snn.onnx"), "--data", str(files / "test.npz"),
                 "--ann", str(files / "ann.onnx"), "--timesteps", "8", "-o", str(out)]) == 0
    assert "SNN accuracy at T = 8" in capsys.readouterr().out

    data = json.loads((out / "report.json").read_text())
    assert len(data["accuracy_curve"]) == 8 and data["timesteps"] == 8
    assert data["samples"] == len(x)
    expected = make_report(snn.model, x, y, ann=ann, timesteps=8, progress=False)
    assert data["ann_accuracy"] == pytest.approx(expected.ann_accuracy, abs=1e-12)
    assert data["accuracy_curve"] == pytest.approx(expected.accuracy_curve, abs=1e-12)
    assert [layer["node"] for layer in data["layers"]] == ["relu0", "relu1"]
    for entry, layer in zip(data["layers"], expected.layers, strict=True):
        assert {"node", "neurons", "firing_rate", "sops", "ann_macs",
                "rate_vs_ann_r"} <= set(entry)
        assert entry["neurons"] == layer.neurons and entry["ann_macs"] == layer.ann_macs
        assert entry["firing_rate"] == pytest.approx(layer.firing_rate, abs=1e-12)
        assert entry["sops"] == pytest.approx(layer.sops, abs=1e-9)
        assert entry["rate_vs_ann_r"] == pytest.approx(layer.rate_vs_ann_r, abs=1e-9)
    assert set(data["energy"]) >= {"ann_pj", "snn_pj", "precision"}
    assert data["energy"]["precision"] == "fp32"
    assert data["energy"]["snn_pj"] == pytest.approx(expected.energy["snn_pj"], abs=1e-9)

    summary = (out / "report.md").read_text()
    for name in PLOTS:
        content = (out / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000, name
        assert f"({name})" in summary
    assert sorted(p.name for p in out.iterdir()) == sorted([*PLOTS, "report.json", "report.md"])


@pytest.mark.parametrize("extra, status, message", [
    (["--precision", "fp64"], 2, "invalid choice"),
    (["--timesteps", "0"], 2, "time steps must be positive"),
])
def test_cli_report_bad_input(files, capsys, extra, status, message) -> None:
    out = files / "out"
    argv = ["report", str(files / "snn.onnx"), "--data", str(files / "test.npz"),
            "--ann", str(files / "ann.onnx"), "-o", str(out)]
    argv += [a.format(d=files) for a in extra]
    if status == 2:  # argparse exits
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    else:
        assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-snn: error:") and message in err[0], err
    assert not out.exists() or not any(out.iterdir())
    assert not list(files.rglob(".*.tmp"))


def test_cli_report_without_labels_needs_the_ann(files, capsys) -> None:
    """Unlabelled data is only refused when there is no ANN to compare the outputs with
    (with --ann, tests/measure/test_any_task_outputs.py checks the comparison)."""
    out = files / "out"
    assert main(["report", str(files / "snn.onnx"), "--data", str(files / "unlabelled.npz"),
                 "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-snn: error:"), err
    assert "no labels" in err[0] and "--ann" in err[0], err
    assert not out.exists() or not any(out.iterdir())


# --- 7. a CNN, neurons between convolutions, in every format -------------------------------

def conv_conv_model() -> onnx.ModelProto:
    """x [N,1,4,4] -> Conv c1 (1->2, 3x3, pads 1) -> Relu r1 -> Conv c2 (2->3, 3x3, pads 1)
    -> Relu r2 -> GlobalAveragePool -> Flatten -> Gemm g (3->4) -> y [N, 4]."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="g"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            ["N", 1, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      {"w1": rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
                       "b1": np.full(2, 0.2, np.float32),
                       "w2": rng.normal(size=(3, 2, 3, 3)).astype(np.float32) / 3,
                       "b2": np.full(3, 0.1, np.float32),
                       "gw": rng.normal(size=(3, 4)).astype(np.float32),
                       "gb": np.zeros(4, np.float32)})


def reference_spikes(model: onnx.ModelProto, x: np.ndarray, timesteps: int) -> dict[str, float]:
    """Spikes per neuron layer, counted by onnx's own reference evaluator (not onnxruntime)
    on the standard format, whose neurons are plain Scans."""
    from onnx.reference import ReferenceEvaluator

    from onnx_snn.export.formats import to_standard

    standard = to_standard(model)
    layers = json.loads({p.key: p.value for p in standard.metadata_props}["onnx_snn.neurons"])
    standard.graph.output.extend(helper.make_empty_tensor_value_info(layer["spikes"])
                                 for layer in layers)
    outputs = ReferenceEvaluator(standard).run(
        [layer["spikes"] for layer in layers],
        {"x": x[None], "timesteps": np.array(timesteps, np.int64)})
    return {layer["node"]: float(spikes.sum()) for layer, spikes in zip(layers, outputs)}


def test_report_on_a_cnn_in_every_format() -> None:
    """Counted by hand: r1 has 2·4·4 = 32 neurons and feeds c2 (fan-out C_out·k·k =
    3·9 = 27; c2's MACs 3·16 outputs × 2·9 = 864); r2 has 48 and feeds g through the
    pooling (fan-out 4, MACs 3·4 = 12); c1 reads the input: 2·16 × 9 = 288 analog MACs.
    The spike counts equal onnx's reference evaluator's on the standard format, and
    every format gives the same report."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 1, 4, 4)).astype(np.float32)
    y = np.zeros(6, np.int64)
    ann = conv_conv_model()
    converted = {fmt: convert(ann, x, format=fmt, progress=False).model
                 for fmt in ("onnx-snn", "standard", "streaming")}
    spikes = reference_spikes(converted["onnx-snn"], x, 8)
    reports = {fmt: make_report(model, x, y, ann=ann, timesteps=8, progress=False)
               for fmt, model in converted.items()}
    for fmt, report in reports.items():
        assert [(layer.node, layer.neurons, layer.ann_macs) for layer in report.layers] == \
            [("r1", 32, 864), ("r2", 48, 12)], fmt
        assert [layer.sops for layer in report.layers] == \
            [spikes["r1"] / 6 * 27, spikes["r2"] / 6 * 4], fmt
        assert report.totals["ann_macs"] == 288 + 864 + 12, fmt
        assert report.totals["analog_macs"] == 288, fmt
        assert all(layer.rate_vs_ann_r > 0.5 for layer in report.layers), fmt
    assert reports["standard"].to_dict() == reports["onnx-snn"].to_dict()
    assert reports["streaming"].to_dict() == reports["onnx-snn"].to_dict()


def test_cli_report_on_a_cnn(tmp_path) -> None:
    """`report` used to stop on every Conv -> neuron -> Conv model ("no static per-sample
    shape"), the demo's included."""
    ann = conv_conv_model()
    onnx.save(ann, tmp_path / "ann.onnx")
    x = np.random.default_rng(7).normal(size=(40, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "test.npz", x=x, y=np.arange(40) % 4)
    convert(ann, x, progress=False).save(tmp_path / "snn.onnx")
    assert main(["report", str(tmp_path / "snn.onnx"), "--data", str(tmp_path / "test.npz"),
                 "--ann", str(tmp_path / "ann.onnx"), "--timesteps", "16", "-o",
                 str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [layer["node"] for layer in data["layers"]] == ["r1", "r2"]
    assert data["output"] == "y"
