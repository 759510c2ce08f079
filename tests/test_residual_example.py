"""examples/residual_digits.py: a residual CNN converts with both presets, and
``preset="best"`` is the more accurate at small T.

``main()`` runs once (module fixture) with a short training (EPOCHS = 8 epochs,
about 2.5 s on one thread); conversion and the two evaluations at T = 64 take
about 2 s more.

Measured with 8 epochs (test accuracy, %, 540 digits; seed 0 is what runs here,
seeds 1-3 show the spread; ``best`` is threshold balancing for 16 levels,
half-threshold start and the TD MaxPool):

    seed | ANN  | spikingjelly T=4 / T=8 / T=64 | best T=4 / T=8 / T=64
    0    | 99.1 | 34.3 / 95.2 / 95.0            | 98.1 / 99.1 / 99.1
    1    | 98.9 | 26.3 / 96.7 / 98.0            | 97.6 / 99.1 / 98.9
    2    | 99.8 | 18.1 / 92.2 / 94.1            | 97.4 / 98.5 / 99.8
    3    | 99.3 | 11.7 / 87.2 / 91.7            | 98.7 / 99.1 / 99.3

At T = 2, best is at 94.1-95.7 % and spikingjelly at chance (9.6-10.2 %).
"""

from __future__ import annotations

from types import ModuleType

import pytest
from conftest import load_example

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EPOCHS = 8


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("residual_digits")


@pytest.fixture(scope="module")
def results(example: ModuleType) -> dict:
    with pytest.warns(UserWarning, match="MaxPool"):  # kept over spikes by "spikingjelly"
        return example.main(epochs=EPOCHS, echo=lambda *_: None)


def test_exported_model_is_residual_with_one_maxpool(results):
    ops = results["ops"]
    assert ops.get("Conv", 0) >= 6
    assert ops.get("Add", 0) >= 1
    assert ops.get("MaxPool", 0) == 1
    # The ReLU after each Add (ResNet's order): every Add feeds a Relu.
    graph = results["ann"].graph
    consumers = {name: [n.op_type for n in graph.node if name in n.input]
                 for add in graph.node if add.op_type == "Add" for name in add.output}
    assert all(kinds == ["Relu"] for kinds in consumers.values()), consumers


def test_returns_the_documented_numbers(example, results):
    assert set(results["curves"]) == {"spikingjelly", "best"}
    for curve in results["curves"].values():
        assert sorted(curve) == list(example.TIMESTEPS)
        assert all(0.0 <= a <= 1.0 for a in curve.values())
    assert results["train_seconds"] > 0
    table = example.markdown_table(results["ann_accuracy"], results["curves"])
    assert table.count("\n") == 3 and "| best |" in table and "T=64" in table


def test_ann_learned(results):
    # Measured (seed 0): 0.991 after 8 epochs, 0.994 after the example's 30.
    assert results["ann_accuracy"] >= 0.95


def test_curves_rise_with_time(results):
    for preset, curve in results["curves"].items():
        assert curve[64] >= curve[1], preset
        assert curve[64] >= curve[4], preset


def test_best_beats_spikingjelly_at_small_t(results):
    # The end-to-end claim: at T = 8 "best" is the more accurate. Measured at
    # seed 0: 99.1 % vs 95.2 % (+3.9 points); +2.4 to +11.9 points over seeds 0-3.
    # A strict inequality, with no margin demanded, keeps the claim without
    # depending on the exact size of the gap.
    curves = results["curves"]
    assert curves["best"][8] > curves["spikingjelly"][8]
    # At T <= 4 the gap is large (seed 0, T = 4: 98.1 % vs 34.3 %; >= 63 points
    # over seeds 0-3): half-threshold start and per-channel thresholds let
    # neurons fire from the first steps, where the classic conversion is at chance.
    assert curves["best"][4] >= curves["spikingjelly"][4] + 0.3
    assert curves["best"][2] >= 0.8 and curves["spikingjelly"][2] <= 0.2


def test_t64_close_to_ann(results):
    ann, curves = results["ann_accuracy"], results["curves"]
    # "best" converges to the ANN: at T = 64 it equals it on seeds 0-3 (measured).
    assert abs(curves["best"][64] - ann) <= 0.02
    # The classic conversion keeps the MaxPool over spike trains, which over-counts
    # (the max of spike counts is at least the max of the rates), so it stays
    # below the ANN and even falls after T = 16: measured 4.3 points below at
    # seed 0 (1.3 to 7.4 over seeds 0-3). Allow 10 points.
    assert curves["spikingjelly"][64] >= ann - 0.10
