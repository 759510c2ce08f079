"""Models as other tools write them: torch (dynamo and TorchScript exporters),
skl2onnx (with and without ZipMap), a Keras-style NHWC graph, opsets 7 to the newest.

Each is converted with Max calibration and checked against an independent answer:
torch's output, sklearn's predictions, or the ANN in onnxruntime. Builders live in
``pattern_models.py`` (``PRODUCERS``), shared with ``benchmarks/patterns_table.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from pattern_models import (
    OPSETS,
    PRODUCERS,
    convert_case,
    digits_classifier,
    keras_style_nhwc,
    opset_base_model,
    rate_coding_errors,
    sklearn_onnx,
    torch_dynamo_bn_cnn,
    torch_torchscript_bn_cnn,
)

from onnx_snn import OnnxSnnError, convert
from onnx_snn.graph.prepare import ai_onnx_opset
from onnx_snn.runtime import SpikingSession

STEPS = (16, 128, 1024)
TOLERANCE = 0.02  # of max |expected output|, at the largest T


def assert_rate_codes(case, snn: onnx.ModelProto) -> None:
    errors, _ = rate_coding_errors(case, snn, STEPS)
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < TOLERANCE, errors


# --------------------------------------------------------------------------- torch

def test_torch_dynamo_export_with_batchnorm(tmp_path) -> None:
    pytest.importorskip("torch")
    case = torch_dynamo_bn_cnn(tmp_path)
    assert case.path.with_name(case.path.name + ".data").is_file()  # external weights
    header = onnx.load(str(case.path), load_external_data=False)
    assert ai_onnx_opset(header) >= 18
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in header.graph.initializer)
    snn = convert(str(case.path), case.data, batch_size=len(case.data["x"]), progress=False)
    assert_rate_codes(case, snn.model)  # against torch's own output


def test_torch_torchscript_export_with_batchnorm(tmp_path) -> None:
    pytest.importorskip("torch")
    case = torch_torchscript_bn_cnn(tmp_path)
    snn = convert(str(case.path), case.data, batch_size=len(case.data["x"]), progress=False)
    assert_rate_codes(case, snn.model)


# --------------------------------------------------------------------------- scikit-learn

SKLEARN_OUTPUTS = {True: ("output_label", "output_probability"),
                   False: ("label", "probabilities")}


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
def test_sklearn_mlp_classifier(zipmap) -> None:
    pytest.importorskip("skl2onnx")
    clf, x_train, _, x_test, y_test = digits_classifier()
    ann = sklearn_onnx(zipmap)
    label_name, probability_name = SKLEARN_OUTPUTS[zipmap]
    assert [o.name for o in ann.graph.output] == [label_name, probability_name]
    assert ("ZipMap" in [n.op_type for n in ann.graph.node]) == zipmap

    snn = convert(ann, x_train, batch_size=len(x_train), progress=False).model
    assert "ZipMap" not in [n.op_type for n in snn.graph.node]
    assert [o.name for o in snn.graph.output][:2] == [label_name, probability_name]
    assert snn.graph.output[1].type.HasField("tensor_type")

    steps = 64
    outputs = SpikingSession(snn).run({"X": x_test}, steps).outputs
    labels, probabilities = outputs[label_name], outputs[probability_name]
    assert labels.shape == (steps, len(x_test)) and labels.dtype == np.int64
    assert probabilities.shape == (steps, len(x_test), 10)
    # a time-difference Softmax: each step sums to 1, the mean is softmax(mean logits)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    # the label after t steps is the class of the probabilities summed over steps 1..t
    # (the label output converges like the scores do)
    summed = np.cumsum(probabilities, axis=0, dtype=np.float32)
    np.testing.assert_array_equal(labels, clf.classes_[summed.argmax(axis=-1)])
    accuracy = float((clf.classes_[probabilities.mean(axis=0).argmax(axis=-1)] == y_test).mean())
    reference = float(clf.score(x_test, y_test))
    assert abs(accuracy - reference) <= 0.02, \
        f"SNN accuracy at T={steps} {accuracy:.4f} vs sklearn {reference:.4f}"
    # the same with the output Softmax dropped: the outputs are the logits
    logits_snn = convert(ann, x_train, batch_size=len(x_train), drop_output_softmax=True,
                         progress=False).model
    logits = SpikingSession(logits_snn).run({"X": x_test}, steps).outputs[probability_name]
    accuracy = float((clf.classes_[logits.mean(axis=0).argmax(axis=-1)] == y_test).mean())
    reference = float(clf.score(x_test, y_test))
    assert abs(accuracy - reference) <= 0.02, \
        f"SNN accuracy at T={steps} {accuracy:.4f} vs sklearn {reference:.4f}"


def test_sklearn_zipmap_and_tensor_outputs_agree() -> None:
    """Same classifier, same calibration: the ZipMap model's probability tensor is the
    zipmap=False model's, step for step."""
    pytest.importorskip("skl2onnx")
    x_train, x_test = digits_classifier()[1], digits_classifier()[3][:50]
    runs = {}
    for zipmap in (True, False):
        snn = convert(sklearn_onnx(zipmap), x_train, batch_size=len(x_train),
                      progress=False).model
        runs[zipmap] = SpikingSession(snn).run({"X": x_test}, 16).outputs
    np.testing.assert_array_equal(runs[True]["output_probability"], runs[False]["probabilities"])
    np.testing.assert_array_equal(runs[True]["output_label"], runs[False]["label"])


# --------------------------------------------------------------------------- Keras-style NHWC

def test_keras_style_nhwc_graph(tmp_path) -> None:
    case = keras_style_nhwc(tmp_path)
    snn = convert_case(case).model
    assert [i.name for i in snn.graph.input] == ["input_1", "timesteps"]
    assert_rate_codes(case, snn)


# --------------------------------------------------------------------------- opsets

@pytest.mark.parametrize("opset", OPSETS)
def test_opset_versions_convert(opset, tmp_path) -> None:
    """Base built at opset 7 (onnx has no Relu downgrade adapter 13 -> 12), converted
    up with onnx.version_converter; compared with the opset-7 base in onnxruntime."""
    case = next(b for b in PRODUCERS if b.__name__ == f"opset_{opset}")(tmp_path)
    assert ai_onnx_opset(case.ann) == opset
    assert ai_onnx_opset(opset_base_model()) == 7
    snn = convert_case(case).model
    assert ai_onnx_opset(snn) == max(13, opset)
    onnx.checker.check_model(snn, full_check=True)
    assert_rate_codes(case, snn)


# --------------------------------------------------------------------------- fixed batch

def _upsampling_net():
    """Conv-Relu-MaxPool-Upsample-Conv-Relu, then ``view(1, -1)`` into a Linear: a net
    that only runs at batch 1, as exported from a batch-1 example."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.relu(self.c2(nn.functional.interpolate(x, scale_factor=2.0)))
            return self.fc(x.view(1, -1))

    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_batch_one_export_with_resize_and_view_converts(dynamo, tmp_path) -> None:
    """A batch-1 export hard-codes the batch in ``view(1, -1)`` (an ``allowzero`` Reshape
    from dynamo) after a Resize; the conversion makes it follow the batch, and the SNN
    approaches torch's output sample by sample."""
    torch = pytest.importorskip("torch")
    net = _upsampling_net()
    path = tmp_path / "b1.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=dynamo)
    ann = onnx.load(str(path))
    assert ann.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = np.random.default_rng(1).random((12, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = np.concatenate([net(torch.from_numpy(row[None])).numpy() for row in x])
    snn = convert(str(path), {ann.graph.input[0].name: x}, batch_size=6, maxpool="td",
                  progress=False).model
    outputs = next(iter(SpikingSession(snn).run({ann.graph.input[0].name: x}, 512)
                        .outputs.values()))
    errors = [np.abs(outputs[:t].mean(axis=0) - expected).max() / np.abs(expected).max()
              for t in (32, 512)]
    assert errors[1] < errors[0] and errors[1] < 0.05, errors


def test_bias_calibration_on_a_dynamo_export(tmp_path) -> None:
    """Dynamo names the batch axis its own way ('batch'); bias calibration needs every
    layer's rank through time folding, and shifts each channel."""
    pytest.importorskip("torch")
    case = torch_dynamo_bn_cnn(tmp_path)
    plain = convert(str(case.path), case.data, batch_size=20, progress=False)
    shifted = convert(str(case.path), case.data, batch_size=20, bias_calibration=8,
                      progress=False)
    for layer in shifted.layers:
        assert layer.bias_shift is not None and layer.bias_shift.ndim == 1
    errors = [rate_coding_errors(case, result.model, (8,))[0][0] for result in (plain, shifted)]
    assert errors[1] < errors[0], errors  # calibrated for T = 8, better there


def _pooled_head(channels_last: bool):
    """Conv-Relu-global average-flatten-Linear-Relu-Linear (VGG's head), with its input
    [N, H, W, C] permuted inside when ``channels_last``."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2) if channels_last else x
            y = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
            return self.fc2(torch.relu(self.fc1(torch.flatten(y, 1))))

    torch.manual_seed(0)
    return Net().eval()


def test_bias_calibration_after_a_dynamo_flatten(tmp_path) -> None:
    """Dynamo writes the flatten as a Reshape whose output shape time folding cannot
    keep; bias calibration takes each layer's layout from the ANN."""
    torch = pytest.importorskip("torch")
    from onnx_snn.export.torch import export_torch

    x = np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)
    path = tmp_path / "ann.onnx"
    export_torch(_pooled_head(False), torch.from_numpy(x[:2]), path, dynamo=True)
    converted = convert(str(path), {"x": x}, batch_size=8, bias_calibration=4, progress=False)
    assert [np.shape(layer.bias_shift) for layer in converted.layers] == [(8,), (16,)]


def test_a_batch_one_flatten_that_drops_the_batch_is_refused(tmp_path) -> None:
    """Dynamo at a fixed batch of 1 writes ``flatten`` of a channels-last tensor as
    Reshape([-1]) -> Gather(constant indices) -> Reshape([1, C]): the batch axis is
    gone, and time folded into it would mix the steps. The conversion refuses, naming
    the node, instead of writing a model that fails on every input."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    path = tmp_path / "ann.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_pooled_head(True), (torch.from_numpy(x[:1]),), str(path),
                          dynamo=True, input_names=["x"])
    assert any(node.op_type == "Gather" for node in onnx.load(str(path)).graph.node)
    with pytest.raises(OnnxSnnError, match=r"turns a tensor with a batch axis into .* which "
                                           r"has none"):
        convert(str(path), {"x": x}, progress=False)


def test_a_global_max_pool_converts_the_same_from_both_exporters(tmp_path) -> None:
    """``AdaptiveMaxPool2d(1)``: TorchScript writes a MaxPool over the whole input,
    dynamo a ReduceMax. Both are the same global max, a time-difference op exact on
    the running means: the two SNNs agree with each other and approach torch."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 3)

        def forward(self, x):
            pooled = nn.functional.adaptive_max_pool2d(torch.relu(self.conv(x)), 1)
            return self.fc(torch.flatten(pooled, 1))

    torch.manual_seed(3)
    net = Net().eval()
    x = np.random.default_rng(4).random((12, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    means = []
    for dynamo in (True, False):
        path = tmp_path / f"ann_{dynamo}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.from_numpy(x[:2]),), str(path), dynamo=dynamo,
                              input_names=["x"])
            snn = convert(str(path), {"x": x}, batch_size=12, progress=False).model
        means.append(SpikingSession(snn).run({"x": x}, 256).per_step.mean(axis=0))
    np.testing.assert_allclose(means[0], means[1], rtol=1e-4, atol=1e-4)
    assert np.abs(means[0] - expected).max() < 0.05 * np.abs(expected).max()
