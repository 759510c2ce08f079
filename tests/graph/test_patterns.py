"""Graph patterns of real networks: each converts, and rate coding reproduces the ANN.

The models live in ``pattern_models.py`` (also used by ``benchmarks/patterns_table.py``).
Property checked for every pattern: with Max calibration on the data that is then
evaluated, the time-averaged SNN output approaches the ANN output in onnxruntime
(error shrinking from T = 16 to 128 to 1024, and under 2 % of the output scale at
1024). Then structural facts per pattern.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import pytest
from pattern_models import (
    AVERAGE_WARNING,
    OVERCOUNT_WARNING,
    SOFTMAX_WARNING,
    build,
    convert_case,
    pattern_names,
    rate_coding_errors,
    tensor_values,
)

from onnx_snn.ops.time_ops import TIME_OPS
from onnx_snn.runtime import SpikingSession

STEPS = (16, 128, 1024)
TOLERANCE = 0.02  # of max |ANN output|, at the largest T


def convert_recording(case, **overrides):
    """Convert ``case``; return the result and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert_case(case, **overrides)
    return result, [w for w in caught if issubclass(w.category, UserWarning)]


def neuron_names(case) -> set[str]:
    """Relu and Clip(0, a) nodes of the ANN, and the signed sites the case names: the
    layers that become neurons."""
    return {node.name for node in case.ann.graph.node if node.op_type in ("Relu", "Clip")} \
        | {f"{tensor}__signed_neuron" for tensor in case.signed}


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def tensors_after(model: onnx.ModelProto, op_type: str) -> set[str]:
    """Names of every tensor computed (transitively) from an ``op_type`` node's output."""
    reached = {out for node in model.graph.node if node.op_type == op_type for out in node.output}
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if set(node.input) & reached and not set(node.output) <= reached:
                reached.update(node.output)
                changed = True
    return reached


@pytest.mark.parametrize("name", pattern_names())
def test_pattern_converts_and_rate_codes(name) -> None:
    case = build(name)
    result, caught = convert_recording(case)
    if case.warns:
        assert any(re.search(case.warns, str(w.message)) for w in caught), \
            f"no UserWarning matching {case.warns!r}; got {[str(w.message) for w in caught]}"
    onnx.checker.check_model(result.model, full_check=True)
    assert {layer.node for layer in result.layers} == neuron_names(case)
    assert "Relu" not in ops(result.model)

    errors, per_step = rate_coding_errors(case, result.model, STEPS)
    assert per_step.shape[0] == max(STEPS) and np.isfinite(per_step).all()
    if not case.converges:
        return
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < TOLERANCE, errors


# --------------------------------------------------------------------------- MaxPool

def test_maxpool_keep_is_the_default_and_warns() -> None:
    case = build("maxpool_keep")
    assert "maxpool" not in case.kwargs  # the default policy
    with pytest.warns(UserWarning, match=OVERCOUNT_WARNING):
        default = convert_case(case)
    with pytest.warns(UserWarning, match=OVERCOUNT_WARNING):
        explicit = convert_case(case, maxpool="keep")
    assert ops(default.model) == ops(explicit.model)
    assert ops(default.model).count("MaxPool") == 1
    # the pool reads spikes: it sits after the first neuron
    pool = next(n for n in default.model.graph.node if n.op_type == "MaxPool")
    assert pool.input[0] in tensors_after(default.model, "IFNode")


def test_maxpool_before_moves_the_pool_in_front_of_the_neuron() -> None:
    case = build("maxpool_before")
    result, caught = convert_recording(case)
    assert not [w for w in caught if re.search(OVERCOUNT_WARNING, str(w.message))]
    pools = [n for n in result.model.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1
    assert pools[0].input[0] not in tensors_after(result.model, "IFNode")
    # relu1 now spikes on the pooled map; its scale is still the ANN Relu's maximum
    # (2x2/2 windows tile the map, so the max is unchanged)
    scales = {layer.node: layer.scale for layer in result.layers}
    relu1_max = float(tensor_values(case.ann, "relu1_out", case.data).max())
    assert scales["relu1"] == pytest.approx(relu1_max, rel=1e-6)


def test_maxpool_avg_replaces_the_pool_and_warns() -> None:
    case = build("maxpool_avg")
    with pytest.warns(UserWarning, match=AVERAGE_WARNING):
        result = convert_case(case)
    assert "MaxPool" not in ops(result.model)
    (pool,) = [n for n in result.model.graph.node if n.op_type == "AveragePool"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    assert attrs["kernel_shape"] == [2, 2] and attrs["strides"] == [2, 2]
    assert attrs.get("pads", [0, 0, 0, 0]) == [0, 0, 0, 0]


# --------------------------------------------------------------------------- Clip / ReLU6

CLIPS = {"clip_relu6": ("relu6", "conv_pre_out"),
         "clip_relu6_opset9": ("relu6", "conv_pre_out"),
         "relu6_torch": ("/1/Clip", "/0/Conv_output_0")}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_clip_becomes_a_neuron_with_scale_capped_at_its_max(name) -> None:
    case = build(name)
    clip, pre_activation = CLIPS[name]
    assert tensor_values(case.ann, pre_activation, case.data).max() > 6.0  # the cap matters
    result = convert_case(case)
    scales = {layer.node: layer.scale for layer in result.layers}
    assert scales[clip] == pytest.approx(6.0, rel=1e-6)
    assert "Clip" not in ops(result.model)
    assert clip in [n.name for n in result.model.graph.node if n.op_type == "IFNode"]


def test_clip_below_its_max_keeps_the_calibrated_scale() -> None:
    case = build("clip_relu6")
    case.data = {"x": case.data["x"] * 0.05}
    clipped = tensor_values(case.ann, "relu6_out", case.data)
    assert 0 < clipped.max() < 6.0
    scales = {layer.node: layer.scale for layer in convert_case(case).layers}
    assert scales["relu6"] == pytest.approx(float(clipped.max()), rel=1e-6)


# --------------------------------------------------------------------------- LRN, Softmax

def test_lrn_is_kept_with_a_warning_with_keep_analog() -> None:
    case = build("lrn")
    with pytest.warns(UserWarning, match="LRN"):
        result = convert_case(case, keep_analog=True)
    assert ops(result.model).count("LRN") == 1
    assert not set(TIME_OPS) & set(ops(result.model))  # no time-difference op


def test_output_softmax_kept_per_step_or_dropped() -> None:
    """With keep_analog the output Softmax runs on each step's logits."""
    kept_case, dropped_case = build("softmax_kept"), build("softmax_dropped")
    with pytest.warns(UserWarning, match=SOFTMAX_WARNING):
        kept = convert_case(kept_case, keep_analog=True)
    dropped = convert_case(dropped_case)
    assert ops(kept.model).count("Softmax") == 1
    assert "Softmax" not in ops(dropped.model)
    assert [o.name for o in dropped.model.graph.output] == ["y"]
    steps = 64
    probabilities = SpikingSession(kept.model).run(kept_case.data, steps).per_step
    logits = SpikingSession(dropped.model).run(dropped_case.data, steps).per_step
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    # same calibration, so the kept model is exactly softmax over each step's logits
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(probabilities, shifted / shifted.sum(axis=-1, keepdims=True),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- fixed batch

@pytest.mark.parametrize("name", ["shuffle_static_batch", "view_one_minus_one"])
def test_fixed_batch_reshapes_follow_time(name) -> None:
    """Per-step outputs of a batch-1 model at T steps are the same whether computed
    in one run or step by step: no step sees another step's data."""
    case = build(name)
    session = SpikingSession(convert_case(case).model)
    steps = 8
    per_step = session.run(case.data, steps).per_step
    assert per_step.shape == (steps, 1, 5)
    prefix = [session.run(case.data, t).per_step[-1] for t in range(1, steps + 1)]
    np.testing.assert_array_equal(per_step, np.stack(prefix))
