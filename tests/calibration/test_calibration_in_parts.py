"""Calibration batches that do not fit the memory budget run in calls of fewer samples,
with the statistics of the whole batch (docs/chunked-execution.md).

The answers are computed apart: numpy's percentile and max of each whole batch, folded
in a plain moving-average loop (``test_calibration.oracle``), and the same calibration
run with no limit.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_calibration import (
    conv_model,
    inputs,
    oracle,
    relu_names,
    relu_outputs,
    run_calibrate,
    split,
)

from onnx_snn import OnnxSnnError, VoltageHook, calibrate
from onnx_snn.calibration import BalancingHookFactory
from onnx_snn.calibration.bias import ann_channel_means
from onnx_snn.calibration.driver import FetchWorker
from onnx_snn.runtime.memory import set_memory_limit
from onnx_snn.snn.rewrite import NeuronPlan

#: conv_model's largest Relu holds 4 x 6 x 6 values a sample, 16 bytes each in the
#: estimate of onnxruntime's working memory and 4 more for the hook of each of its three
#: Relus (4 x 6 x 6, 3 x 2 x 2 and 5 values): 3,236 bytes a sample, so a budget of 10,000
#: bytes runs calls of 3 samples.
THREE_SAMPLES = 10_000
MODES = ["Max", "99.9%", "50%", "12.5%", "0%", "100%", 1 / 3]


@pytest.fixture
def memory_limit():
    yield set_memory_limit
    set_memory_limit(None)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_a_cut_batch_gives_the_statistic_of_the_whole_batch(mode, memory_limit, capsys) -> None:
    model, x = conv_model(), inputs((25, 2, 6, 6), seed=5)
    modes = {name: mode for name in relu_names(model)}
    memory_limit(THREE_SAMPLES, announce=True)
    cut = run_calibrate(model, x, batch_size=10, modes=modes)
    assert "calibration batches of 10 samples run in calls of 3 samples" in capsys.readouterr().err
    expected = oracle(model, x, 10, modes, 0.1)
    for name, value in expected.items():
        assert cut.scales[name] == pytest.approx(value, rel=1e-12, abs=0.0), name
    assert (cut.batches, cut.samples) == (3, 25)
    memory_limit(None)
    whole = run_calibrate(model, x, batch_size=10, modes=modes)
    assert cut.scales == whole.scales  # the same bits


@pytest.mark.parametrize("mode", ["Max", "99%", "5%"], ids=str)
def test_a_cut_batch_gives_the_per_channel_statistic(mode, memory_limit) -> None:
    model, x = conv_model(), inputs((12, 2, 6, 6), seed=8)
    memory_limit(THREE_SAMPLES)
    hooks = {name: VoltageHook(mode, momentum=0.5, per_channel=True)
             for name in relu_names(model)}
    result = calibrate(model, x, hooks, batch_size=6, progress=False)
    for name in hooks:
        per_batch = []
        for batch in split(x, 6):
            values = relu_outputs(model, batch)[name]
            axes = tuple(a for a in range(values.ndim) if a != 1)
            statistic = np.max(values, axis=axes) if mode == "Max" \
                else np.percentile(values, float(mode[:-1]), axis=axes)
            per_batch.append(statistic.astype(np.float64))
        expected = per_batch[0] * 0.5 + per_batch[1] * 0.5
        np.testing.assert_allclose(result.scales[name], expected, rtol=1e-12, atol=0, err_msg=name)


def test_balanced_thresholds_do_not_depend_on_the_cut(memory_limit) -> None:
    model, x = conv_model(), inputs((20, 2, 6, 6), seed=9)

    def thresholds():
        hooks = {name: BalancingHookFactory().create() for name in relu_names(model)}
        return calibrate(model, x, hooks, batch_size=10, progress=False).scales

    whole = thresholds()
    memory_limit(THREE_SAMPLES)
    cut = thresholds()
    for name in whole:
        np.testing.assert_array_equal(cut[name], whole[name])


def test_channel_means_do_not_depend_on_the_cut(memory_limit) -> None:
    model, x = conv_model(), inputs((20, 2, 6, 6), seed=10)
    layers = [NeuronPlan(node=name, scale=0.5, neuron=None) for name in relu_names(model)]
    whole = ann_channel_means(model, x, layers, batch_size=10, progress=False)
    memory_limit(THREE_SAMPLES)
    cut = ann_channel_means(model, x, layers, batch_size=10, progress=False)
    for name, hook in whole.items():
        expected = np.minimum(relu_outputs(model, x)[name], 0.5)
        axes = tuple(a for a in range(expected.ndim) if a != 1)
        np.testing.assert_allclose(hook.scale.reshape(-1), expected.astype(np.float64)
                                   .mean(axis=axes), rtol=1e-9)
        np.testing.assert_array_equal(cut[name].scale, hook.scale)


def test_one_sample_over_the_budget_is_refused_in_one_line(memory_limit) -> None:
    model, x = conv_model(), inputs((4, 2, 6, 6), seed=1)
    memory_limit(1000)
    with pytest.raises(OnnxSnnError, match=r"one sample needs about 2,880 bytes, more than "
                                           r"the memory budget of 1,000 bytes"):
        run_calibrate(model, x, batch_size=4, modes={"c0": "Max"})


def test_a_model_of_fixed_batch_runs_its_batch_whole(memory_limit) -> None:
    model, x = conv_model(), inputs((8, 2, 6, 6), seed=2)
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                [4, 2, 6, 6]))
    memory_limit(1000)  # less than one sample: a fixed batch is not cut, nor refused
    modes = {name: "99%" for name in relu_names(model)}
    result = run_calibrate(model, x, batch_size=4, modes=modes)
    expected = oracle(model, x, 4, modes, 0.1)
    for name, value in expected.items():
        assert result.scales[name] == pytest.approx(value, rel=1e-12, abs=0.0), name


def test_a_worker_returns_the_calls_of_a_cut_batch_as_a_list(memory_limit) -> None:
    model = conv_model()
    memory_limit(THREE_SAMPLES)
    worker = FetchWorker(model, [model.graph.output[0].name], {}, "", frozenset({"x"}),
                         sample_bytes=3236)
    calls = worker({"x": inputs((7, 2, 6, 6), seed=3)})
    assert isinstance(calls, list) and [call["calibration__samples"] for call in calls] == [3, 3, 1]
