"""Per-channel settings follow the data layout: NHWC graphs (a Transpose after the
Conv, as TensorFlow/Keras converters write them) and channels-last MatMuls keep their
channels on the last axis, not on H.

Independent answer: the per-channel maximum of each ANN activation, computed with
numpy over onnxruntime's value of the tensor, and the ANN's own output.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from pattern_models import Net, tensor_values

from onnx_snn import convert
from onnx_snn.calibration.factories import BalancingHookFactory, HookFactory
from onnx_snn.runtime import SpikingSession

H, W, C_IN, C1, C2 = 5, 7, 3, 4, 6


def nhwc_net() -> tuple:
    """[N, 5, 7, 3] -> Transpose -> Conv -> Transpose back -> Relu 'r1' [N, 5, 7, 4]
    -> MatMul over channels -> Relu 'r2' [N, 5, 7, 6] -> mean over H, W -> MatMul."""
    n = Net(7)
    nchw = n.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    nhwc = n.op("Transpose", [n.conv(nchw, C_IN, C1)], perm=[0, 2, 3, 1])
    r1 = n.relu(nhwc, "r1")
    r2 = n.relu(n.dense(r1, C1, C2), "r2")
    pooled = n.op("ReduceMean", [r2, n.const([1, 2], np.int64)], keepdims=0)
    y = n.op("MatMul", [pooled, n.const(n.rng.normal(size=(C2, 3)))])
    model = n.model(y, {"x": ["N", H, W, C_IN]}, opset=18)
    x = np.random.default_rng(3).random((40, H, W, C_IN)).astype(np.float32)
    return model, x


def channel_max(values: np.ndarray) -> np.ndarray:
    """Per-channel maximum with channels on the last axis (numpy, all rows in one batch)."""
    return values.reshape(-1, values.shape[-1]).max(axis=0)


def test_per_channel_scales_of_an_nhwc_graph_are_per_channel_on_the_last_axis() -> None:
    ann, x = nhwc_net()
    converted = convert(ann, {"x": x}, hook_factory=HookFactory("max", per_channel=True),
                        batch_size=len(x), progress=False)
    scales = {layer.node: np.asarray(layer.scale) for layer in converted.layers}
    for relu, channels in (("r1", C1), ("r2", C2)):
        values = tensor_values(ann, f"{relu}_out", {"x": x})
        assert values.shape == (len(x), H, W, channels)
        np.testing.assert_allclose(scales[relu], channel_max(values), rtol=1e-6)
    # the SNN's mean output approaches the ANN's as T grows
    expected = ort.InferenceSession(ann.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    outputs = SpikingSession(converted.model).run({"x": x}, 256).outputs["y"]
    errors = [np.abs(outputs[:t].mean(axis=0) - expected).max() / np.abs(expected).max()
              for t in (16, 256)]
    assert errors[1] < errors[0] and errors[1] < 0.02, errors


@pytest.mark.parametrize("option", [{"threshold_balancing": True}, {"bias_calibration": 4}],
                         ids=["threshold-balancing", "bias-calibration"])
def test_layerwise_per_channel_methods_run_on_an_nhwc_graph(option) -> None:
    """Threshold balancing and bias calibration keep one value per channel of the last
    axis, and the converted model runs in plain onnxruntime."""
    ann, x = nhwc_net()
    settings = {"hook_factory": BalancingHookFactory(timesteps=16)} \
        if "threshold_balancing" in option else {"bias_calibration": option["bias_calibration"]}
    converted = convert(ann, {"x": x}, batch_size=20, progress=False, **settings)
    for layer, channels in zip(converted.layers, (C1, C2)):
        per_channel = layer.bias_shift if layer.bias_shift is not None else layer.scale
        assert np.shape(per_channel) == (channels,)
    session = ort.InferenceSession(converted.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    steps = np.array(8, np.int64)
    (out,) = session.run(None, {"x": x[None], converted.model.graph.input[-1].name: steps})
    assert out.shape == (8, len(x), 3) and np.isfinite(out).all()
