"""MaxPool over spikes with ``maxpool="td"`` and ``"gated"`` (``onnx_snn.snn.temporal_pooling``).

The independent answer is a plain numpy loop over t and over the pooling windows,
applied to the spikes that the SNN feeds the pool (read from the converted model).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pattern_models import Net, images

from onnx_snn import OnnxSnnError, convert
from onnx_snn.calibration.factories import HookFactory
from onnx_snn.export.formats import to_standard, to_streaming
from onnx_snn.graph.pooling import MAXPOOL_POLICIES, check_policy
from onnx_snn.io.metadata import metadata, neurons
from onnx_snn.ops.time_ops import TIME_OPS
from onnx_snn.runtime import SpikingSession
from onnx_snn.runtime.sessions import create_session
from onnx_snn.runtime.streaming import StreamingSession

STEPS = 12
POOL_ATTRS = {
    "plain": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "padded": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1],
               "ceil_mode": 1},
    "dilated": {"kernel_shape": [2, 2], "strides": [1, 2], "dilations": [2, 2],
                "pads": [0, 1, 1, 0]},
}


def pool_model(attrs: dict, concat: bool = False, seed: int = 5) -> onnx.ModelProto:
    """conv-relu ('spikes'; with ``concat``, two conv-relu branches concatenated) ->
    MaxPool 'pool' -> conv-relu -> head."""
    n = Net(seed)
    spikes = n.relu(n.conv("x", 3, 4, gain=2.0), "relu_a")
    channels = 4
    if concat:
        other = n.relu(n.conv("x", 3, 3, gain=2.0), "relu_b")
        spikes, channels = n.op("Concat", [spikes, other], "concat", axis=1), 7
    pooled = n.op("MaxPool", [spikes], "pool", **attrs)
    return n.model(n.head(n.relu(n.conv(pooled, channels, 6), "relu_c"), 6))


def convert_quietly(ann: onnx.ModelProto, data: dict, **kwargs) -> onnx.ModelProto:
    """``convert`` with Max calibration on all of ``data`` in one batch, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return convert(ann, data, batch_size=len(data["x"]), progress=False, **kwargs).model


def pool_tensors(snn: onnx.ModelProto, data: dict) -> tuple[np.ndarray, np.ndarray]:
    """The MaxPool's input and output in the SNN, per step: [T, N, C, H, W] each."""
    pool_input = next(node for node in snn.graph.node if node.name == "pool").input[0]
    producer = {out: node for node in snn.graph.node for out in node.output}
    # The pool reads the running sum of its input: walk back to what is summed.
    summed = producer[pool_input]
    assert summed.op_type == "RunningSum"
    pool_input = summed.input[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(snn)
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in (pool_input, "pool_out"))
    session = create_session(probe, native=False)
    x, y = session.run([pool_input, "pool_out"], {"x": data["x"][None],
                                                  "timesteps": np.array(STEPS, np.int64)})
    return (x.reshape(STEPS, -1, *x.shape[1:]), y.reshape(STEPS, -1, *y.shape[1:]))


def windows(attrs: dict, size: tuple[int, int], out: tuple[int, int]):
    """For each output position (i, j), the input positions of its window in scan order
    (rows, then columns), padding left out."""
    kernel, strides = attrs["kernel_shape"], attrs.get("strides", [1, 1])
    dilations, pads = attrs.get("dilations", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
    for i in range(out[0]):
        for j in range(out[1]):
            rows = [i * strides[0] - pads[0] + a * dilations[0] for a in range(kernel[0])]
            cols = [j * strides[1] - pads[1] + b * dilations[1] for b in range(kernel[1])]
            yield (i, j), [(r, c) for r in rows for c in cols
                           if 0 <= r < size[0] and 0 <= c < size[1]]


def max_pool(v: np.ndarray, attrs: dict, out: tuple[int, int]) -> np.ndarray:
    """The max of ``v`` [N, C, H, W] over each window: [N, C, *out]."""
    y = np.zeros((*v.shape[:2], *out), v.dtype)
    for (i, j), window in windows(attrs, v.shape[2:], out):
        y[:, :, i, j] = np.stack([v[:, :, r, c] for r, c in window], axis=-1).max(axis=-1)
    return y


def reference(x: np.ndarray, attrs: dict, out: tuple[int, int], policy: str) -> np.ndarray:
    """The pool of ``x`` [T, N, C, H, W] over time, step by step: "td" the difference of
    the max of the running sums, "gated" this step's input where the running sum is
    largest (the first such position in the window)."""
    y = np.zeros((*x.shape[:3], *out), np.float32)
    summed = np.zeros_like(x[0])
    for t in range(len(x)):
        before, summed = summed, summed + x[t]
        if policy == "td":
            y[t] = max_pool(summed, attrs, out) - max_pool(before, attrs, out)
            continue
        for (i, j), window in windows(attrs, x.shape[3:], out):
            values = np.stack([summed[:, :, r, c] for r, c in window], axis=-1)  # [N, C, K]
            first = values.argmax(axis=-1)
            rows = np.array([r for r, _ in window])[first]
            cols = np.array([c for _, c in window])[first]
            n, c = np.indices(first.shape)
            y[t, :, :, i, j] = x[t, n, c, rows, cols]
    return y


@pytest.mark.parametrize("policy", ["td", "gated"])
@pytest.mark.parametrize("case", ["plain", "padded", "dilated", "concat"])
def test_pool_over_spikes_matches_the_numpy_loop(case: str, policy: str) -> None:
    attrs = POOL_ATTRS["padded" if case == "concat" else case]
    data = images(7, count=4)
    snn = convert_quietly(pool_model(attrs, concat=case == "concat"), data, maxpool=policy)
    x, y = pool_tensors(snn, data)
    np.testing.assert_array_equal(y, reference(x, attrs, y.shape[3:], policy))
    # The pool reads spikes, 0 or one value per channel (1 where the scale is folded
    # into the next layer, the branch's scale after a Concat), and emits the same.
    for channel in range(x.shape[2]):
        spike, pooled = x[:, :, channel].max(), y[:, :, channel]
        assert spike > 0 and set(np.unique(x[:, :, channel])) == {0, spike}
        assert np.all((pooled == 0) | np.isclose(pooled, spike, rtol=1e-5, atol=0))
    assert y.any() and (case == "concat" or set(np.unique(x)) == {0, 1})
    if policy == "td":  # the cumulative output is the max of the cumulative input
        for t, summed in enumerate(np.cumsum(x, axis=0)):
            np.testing.assert_array_equal(y[:t + 1].sum(axis=0),
                                          max_pool(summed, attrs, y.shape[3:]))


@pytest.mark.parametrize("policy", ["td", "gated"])
def test_formats_give_the_same_outputs_step_by_step(policy: str) -> None:
    data = images(8, count=3)
    snn = convert_quietly(pool_model(POOL_ATTRS["padded"], concat=True), data, maxpool=policy)
    expected = SpikingSession(snn, native=False).run(data, STEPS).outputs["y"]
    streaming = to_streaming(snn)
    assert {op.domain for op in streaming.opset_import} <= {"", "ai.onnx"}
    np.testing.assert_array_equal(StreamingSession(streaming, native=False)
                                  .run(data, STEPS).outputs["y"], expected)
    np.testing.assert_array_equal(SpikingSession(to_standard(snn), native=False)
                                  .run(data, STEPS).outputs["y"], expected)


def test_streaming_carries_the_previous_step_as_state() -> None:
    data = images(8, count=3)
    streaming = to_streaming(convert_quietly(pool_model(POOL_ATTRS["plain"]), data,
                                             maxpool="td"))
    session = StreamingSession(streaming, native=False)
    assert sum(name.endswith("__previous") for name, _ in session.states) == 1
    assert "Pad" not in {node.op_type for node in streaming.graph.node}  # the shift is gone


def test_static_maxpool_is_left_alone() -> None:
    """A MaxPool on the input (before any neuron) runs once, as in the ANN."""
    n = Net(9)
    pooled = n.op("MaxPool", ["x"], "pool", kernel_shape=[2, 2], strides=[2, 2])
    ann = n.model(n.head(n.relu(n.conv(pooled, 3, 4), "relu"), 4))
    snn = convert_quietly(ann, images(9, count=4), maxpool="td")
    pool = next(node for node in snn.graph.node if node.name == "pool")
    assert len(pool.output) == 1 and pool.input[0] == "x__folded"
    assert not set(TIME_OPS) & {node.op_type for node in snn.graph.node}


def test_maxpool_with_an_indices_output_is_refused() -> None:
    n = Net(10)
    spikes = n.relu(n.conv("x", 3, 4), "relu")
    n.nodes.append(helper.make_node("MaxPool", [spikes], ["pooled", "where"], name="pool",
                                    kernel_shape=[2, 2], strides=[2, 2]))
    ann = n.model(n.head(n.relu(n.conv("pooled", 4, 4), "relu2"), 4))
    ann.graph.output.append(helper.make_tensor_value_info("where", TensorProto.INT64, None))
    with pytest.raises(OnnxSnnError, match=r"MaxPool 'pool' also outputs its indices"):
        convert_quietly(ann, images(10, count=4), maxpool="gated")


def test_temporal_policies_keep_the_ann_and_are_valid_names() -> None:
    assert {"td", "gated"} <= set(MAXPOOL_POLICIES)
    assert check_policy("td") == "td" and check_policy("gated") == "gated"
    data = images(7, count=4)
    snn = convert_quietly(pool_model(POOL_ATTRS["plain"]), data, maxpool="td")
    assert [layer.node for layer in neurons(metadata(snn))] == ["relu_a", "relu_c"]


def trained_maxpool_net() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """A digits CNN, conv-BN-ReLU-MaxPool x2 then a linear layer, trained for a few
    seconds; its training inputs (calibration) and test inputs."""
    import torch
    from torch import nn

    from onnx_snn.demo.digits import load_digits_split, train_classifier
    from onnx_snn.export.torch import export_torch

    x_train, y_train, x_test, _ = load_digits_split()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 2 * 2, 10))
    net = train_classifier(net, x_train, y_train, epochs=10)
    return export_torch(net, torch.from_numpy(x_train[:2]), dynamo=False), x_train, x_test


def output_errors(ann: onnx.ModelProto, calibration: np.ndarray, test: np.ndarray,
                  policies: tuple[str, ...], steps: tuple[int, ...]) -> dict[str, list[float]]:
    """For each policy, ``max |mean SNN output over T steps - ANN output| / max |ANN|``
    on ``test`` for each T in ``steps``."""
    expected = create_session(ann).run(None, {"x": test})[0]
    errors = {}
    for policy in policies:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "keep" warns that the max over-counts
            snn = convert(ann, calibration, maxpool=policy, progress=False).model
        per_step = SpikingSession(snn).run(test, max(steps)).outputs["y"]
        errors[policy] = [float(np.abs(per_step[:t].mean(axis=0) - expected).max()
                                / np.abs(expected).max()) for t in steps]
    return errors


def test_td_gets_closer_to_the_ann_than_keep() -> None:
    errors = output_errors(*trained_maxpool_net(), policies=("keep", "td"), steps=(64,))
    assert errors["td"][0] < errors["keep"][0]


def _mean_errors(ann: onnx.ModelProto, data: dict, snn: onnx.ModelProto,
                 steps=(16, 256)) -> list[float]:
    """max |mean SNN output over t steps - ANN output| / max |ANN| (ANN in onnxruntime)."""
    import onnxruntime as ort

    expected = ort.InferenceSession(ann.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, data)[0]
    per_step = SpikingSession(snn).run(data, max(steps)).per_step
    return [float(np.abs(per_step[:t].mean(axis=0) - expected).max() / np.abs(expected).max())
            for t in steps]


def test_a_maxpool_of_analog_values_is_a_time_difference_op_under_keep() -> None:
    """conv-relu-conv-HardSigmoid-MaxPool: the pool reads a time-difference op's analog
    output (as PaddleOCR's MobileNetV3 head does after a hardswish). The max of those
    per-step values never converged (the classifier sat at chance); pooled as a
    time-difference op, the mean output is the ANN's."""
    n = Net(21)
    r1 = n.relu(n.conv("x", 3, 6), "relu1")
    gated = n.op("HardSigmoid", [n.conv(r1, 6, 6)], "gate")
    pooled = n.op("MaxPool", [gated], "pool", kernel_shape=[2, 2], strides=[2, 2])
    ann = n.model(n.head(n.relu(n.conv(pooled, 6, 6), "relu2"), 6))
    data = images(22, count=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no over-count warning: it pools no spikes
        snn = convert(ann, data, hook_factory=HookFactory("max"), progress=False).model
    errors = _mean_errors(ann, data, snn)
    assert errors[1] < errors[0] and errors[1] < 0.03, errors


def test_maxpool_before_a_later_neuron_converges() -> None:
    """relu-conv-relu-MaxPool with ``maxpool="before"``: the pool moves onto the second
    neuron's input, which varies over time; it pools the potentials' running means
    (it kept the max of per-step inputs, and sat at 25 % on a LeNet)."""
    n = Net(23)
    r1 = n.relu(n.conv("x", 3, 6), "relu1")
    r2 = n.relu(n.conv(r1, 6, 6), "relu2")
    pooled = n.op("MaxPool", [r2], "pool", kernel_shape=[2, 2], strides=[2, 2])
    ann = n.model(n.head(n.relu(n.conv(pooled, 6, 6), "relu3"), 6))
    data = images(24, count=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = convert(ann, data, hook_factory=HookFactory("max"), maxpool="before",
                            progress=False)
    ops = [node.op_type for node in converted.model.graph.node]
    assert "MaxPool" in ops and "RunningSum" in ops  # pooled over running sums
    errors = _mean_errors(ann, data, converted.model)
    assert errors[1] < errors[0] and errors[1] < 0.03, errors
