"""Time-difference ops (docs/semantics.md, "Time-difference ops") and signed sites,
against the definitions computed here in numpy, and against twins of the same network."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper
from onnx.inliner import inline_selected_functions

from onnx_snn import convert
from onnx_snn.export.formats import export_format
from onnx_snn.io.metadata import ACCUMULATORS, DIFFERENCES
from onnx_snn.ops.function_bodies import DOMAIN
from onnx_snn.ops.time_ops import TIME_OPS
from onnx_snn.runtime import SpikingSession, run_snn
from onnx_snn.runtime.streaming import StreamingSession

STEPS = 24


def two_relu_model(tail: list[onnx.NodeProto], outputs: list[str],
                   weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """x [N, 6] -> MatMul -> Relu 'a' and MatMul -> Relu 'b', then ``tail`` (which may
    read ``weights``)."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["pa"]),
             helper.make_node("Relu", ["pa"], ["a"], name="relu_a"),
             helper.make_node("MatMul", ["x", "wb"], ["pb"]),
             helper.make_node("Relu", ["pb"], ["b"], name="relu_b"), *tail]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                      [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 5])
                       for name in outputs],
                      {"wa": rng.normal(size=(6, 5)).astype(np.float32),
                       "wb": rng.normal(size=(6, 5)).astype(np.float32), **(weights or {})})


def data() -> np.ndarray:
    return np.random.default_rng(4).normal(size=(12, 6)).astype(np.float32)


def per_step_outputs(model: onnx.ModelProto, steps: int = STEPS) -> dict[str, np.ndarray]:
    return SpikingSession(model).run(data(), steps).outputs


def spikes() -> dict[str, np.ndarray]:
    """The scaled spike trains of 'a' and 'b' per step [T, N, 5], from the twin that
    outputs them (same calibration: one batch, Max)."""
    twin = two_relu_model([], ["a", "b"])
    return per_step_outputs(convert(twin, data(), batch_size=100, progress=False).model)


def running_mean(values: np.ndarray) -> np.ndarray:
    return np.cumsum(values.astype(np.float64), axis=0) / np.arange(1, len(values) + 1)[
        :, None, None]


def time_difference(mean_output: np.ndarray) -> np.ndarray:
    """y_t = t·f_t − (t−1)·f_{t−1} from f_t = f(x̄_t) [T, ...]."""
    t = np.arange(1, len(mean_output) + 1)[:, None, None]
    scaled = t * mean_output
    return scaled - np.concatenate([np.zeros_like(scaled[:1]), scaled[:-1]])


def test_an_elementwise_op_emits_the_time_difference_of_f_of_the_running_mean() -> None:
    ann = two_relu_model([helper.make_node("Sigmoid", ["a"], ["y"], name="gate")], ["y"])
    got = per_step_outputs(convert(ann, data(), batch_size=100, progress=False).model)["y"]
    a = spikes()["a"]
    expected = time_difference(1 / (1 + np.exp(-running_mean(a))))
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # so the mean output over 1..t is f of the mean input, at every t
    np.testing.assert_allclose(running_mean(got)[-1], 1 / (1 + np.exp(-running_mean(a)[-1])),
                               atol=1e-5)


def test_a_product_of_two_spiking_tensors_uses_both_running_sums() -> None:
    ann = two_relu_model([helper.make_node("Mul", ["a", "b"], ["y"], name="product")], ["y"])
    got = per_step_outputs(convert(ann, data(), batch_size=100, progress=False).model)["y"]
    trains = spikes()
    expected = time_difference(running_mean(trains["a"]) * running_mean(trains["b"]))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_chain_of_td_ops_reads_each_value_once_through_affine_ops() -> None:
    """tanh(2·sigmoid(a) + 1)·b: the Sigmoid reads the running mean of a; the Tanh
    reads what the Sigmoid computed, with the scale and shift replayed on it; the
    product reads that and the running mean of b. Two running means, one difference."""
    tail = [helper.make_node("Sigmoid", ["a"], ["s"], name="gate"),
            helper.make_node("Mul", ["s", "two"], ["s2"], name="scale"),
            helper.make_node("Add", ["s2", "one"], ["s3"], name="shift"),
            helper.make_node("Tanh", ["s3"], ["h"], name="squash"),
            helper.make_node("Mul", ["h", "b"], ["y"], name="product")]
    ann = two_relu_model(tail, ["y"], {"two": np.array(2, np.float32),
                                       "one": np.array(1, np.float32)})
    snn = convert(ann, data(), batch_size=100, progress=False).model
    ops = [node.op_type for node in snn.graph.node]
    assert ops.count("RunningMean") == 2 and ops.count("StepDifference") == 1
    trains = spikes()
    mean_a, mean_b = running_mean(trains["a"]), running_mean(trains["b"])
    expected = time_difference(np.tanh(2 / (1 + np.exp(-mean_a)) + 1) * mean_b)
    np.testing.assert_allclose(per_step_outputs(snn)["y"], expected, atol=1e-4)


def gelu_tail() -> list[onnx.NodeProto]:
    return [helper.make_node("Mul", ["a", "b"], ["ab"], name="product"),
            helper.make_node("Erf", ["ab"], ["e"], name="erf"),
            helper.make_node("Sigmoid", ["b"], ["s"], name="gate"),
            helper.make_node("Add", ["e", "s"], ["y"], name="sum")]


@pytest.mark.parametrize("form", ["standard", "streaming"])
def test_the_formats_run_time_difference_ops_like_the_onnx_snn_format(form) -> None:
    """Streaming keeps the running sums, the step count and the previous step as state."""
    ann = two_relu_model(gelu_tail(), ["y"])
    snn = convert(ann, data(), batch_size=100, progress=False).model
    expected = per_step_outputs(snn)["y"]
    other = export_format(snn, form)
    if form == "standard":
        got = per_step_outputs(other)["y"]
    else:
        session = StreamingSession(other)
        got = np.stack([session.step({"x": data()[None]})["y"][0] for _ in range(STEPS)])
    np.testing.assert_array_equal(got, expected)


def cumsum_form(snn: onnx.ModelProto) -> onnx.ModelProto:
    """``snn`` as models converted before the time ops were: their function bodies
    inlined, the CumSums listed as accumulators and the Subs as differences."""
    old = inline_selected_functions(snn, [(DOMAIN, op) for op in TIME_OPS])
    for index, node in enumerate(old.graph.node):
        node.name = node.name or f"inlined_{index}"
    listed = {ACCUMULATORS: [n.name for n in old.graph.node if n.op_type == "CumSum"],
              DIFFERENCES: [n.name for n in old.graph.node if n.op_type == "Sub"]}
    helper.set_model_props(old, {**{e.key: e.value for e in old.metadata_props},
                                 **{key: json.dumps(names) for key, names in listed.items()}})
    return old


def test_streaming_still_exports_models_converted_before_the_time_ops() -> None:
    snn = convert(two_relu_model(gelu_tail(), ["y"]), data(), batch_size=100,
                  progress=False).model
    old = cumsum_form(snn)
    assert not any(n.domain == DOMAIN and n.op_type in TIME_OPS for n in old.graph.node)
    session = StreamingSession(export_format(old, "streaming"))
    got = np.stack([session.step({"x": data()[None]})["y"][0] for _ in range(STEPS)])
    np.testing.assert_array_equal(got, per_step_outputs(snn)["y"])


def permuted_model(permute: bool) -> onnx.ModelProto:
    """x [N, 4, 6] -> MatMul -> Relu -> (Transpose to [4, N, 6]) -> Softmax(-1) ->
    MatMul -> (Transpose back) -> y [N, 4, 3]: attention-style layouts."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"], name="relu")]
    current = "r"
    if permute:
        nodes.append(helper.make_node("Transpose", ["r"], ["rt"], perm=[1, 0, 2]))
        current = "rt"
    nodes += [helper.make_node("Softmax", [current], ["s"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["s", "w2"], ["m"])]
    if permute:
        nodes.append(helper.make_node("Transpose", ["m"], ["y"], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["y"]))
    return make_model(nodes,
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3])],
                      {"w1": rng.normal(size=(6, 6)).astype(np.float32),
                       "w2": rng.normal(size=(6, 3)).astype(np.float32)})


def test_a_batch_axis_moved_by_a_transpose_gives_the_batch_first_twin() -> None:
    """The Softmax and the signed neuron before the second MatMul read [4, T·N, 6]:
    they must step along axis 1, so the SNN equals the one without the Transposes."""
    x = np.random.default_rng(6).normal(size=(5, 4, 6)).astype(np.float32)
    results = {}
    for permute in (False, True):
        snn = convert(permuted_model(permute), x, batch_size=100, progress=False)
        assert [layer.neuron.signed for layer in snn.layers] == [False, True]
        results[permute] = run_snn(snn.model, x, 32)[0]
    np.testing.assert_allclose(results[True], results[False], atol=1e-5)


def test_report_compares_a_signed_neuron_with_the_tensor_it_reads_in_the_ann() -> None:
    """The Sigmoid feeds a MatMul, so a signed neuron stands before it: report --ann
    finds its ANN values (the Sigmoid's output) and its rate follows them."""
    from onnx_snn.measure.report import make_report

    rng = np.random.default_rng(7)
    ann = two_relu_model([helper.make_node("Sigmoid", ["a"], ["s"], name="gate"),
                          helper.make_node("MatMul", ["s", "w"], ["y"])], ["y"],
                         {"w": rng.normal(size=(5, 5)).astype(np.float32)})
    converted = convert(ann, data(), batch_size=100, progress=False)
    assert [layer.neuron.signed for layer in converted.layers] == [False, True]
    report = make_report(converted.model, {"x": data()}, np.zeros(12, np.int64), ann=ann,
                         timesteps=256, progress=False)
    assert [layer.node for layer in report.layers] == [layer.node for layer in
                                                        converted.layers]
    assert report.layers[1].rate_vs_ann_r > 0.99


def test_report_counts_time_difference_ops_as_analog_operations() -> None:
    """The Sigmoid on [N, 5] computes 5 values per sample and step: 5·T analog ops,
    priced like MACs in the SNN's energy."""
    from onnx_snn.measure.report import ENERGY_PJ, make_report

    ann = two_relu_model([helper.make_node("Sigmoid", ["a"], ["y"], name="gate")], ["y"])
    snn = convert(ann, data(), batch_size=100, progress=False).model
    labels = np.zeros(len(data()), np.int64)
    report = make_report(snn, {"x": data()}, labels, timesteps=8)
    assert report.totals["td_ops"] == 5 * 8
    mac, ac = ENERGY_PJ["fp32"]
    assert report.energy["snn_pj"] == pytest.approx(
        mac * (report.totals["analog_macs"] + 5 * 8) + ac * report.totals["sops"])
