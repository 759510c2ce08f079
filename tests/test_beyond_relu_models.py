"""The trained nets beyond ReLU of ``tests/beyond_relu_models.py`` (ViT, EfficientNet,
MobileNetV3, ConvNeXt, BERT on scikit-learn's digits), exported with the dynamo and
the TorchScript exporter.

Each net is trained once per module (``BeyondReluBuilder`` in a pytest temporary
folder, both exporters sharing the weights). Checked per net and exporter: the
exported file runs in onnxruntime and gives the torch net's logits on all 540 test
inputs (to 1e-4); its accuracy on the true labels is at least MIN_ACCURACY; the
data files hold what the builder's docstring says; and each export holds the ops
that make the net a test of conversion beyond ReLU, in the form its exporter
writes them (dynamo: ``Gelu``; TorchScript: the ``Erf`` form of GELU), with the
attention's permutation of the batch axis (``Transpose`` perm [1, 0, 2]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from beyond_relu_models import (
    ARCHITECTURES,
    CALIB,
    EXPORTERS,
    BeyondReluBuilder,
    digits_data,
    ort_outputs,
    torch_logits,
)

IDS = [(arch, exporter) for arch in ARCHITECTURES for exporter in EXPORTERS]
MIN_ACCURACY = {"vit": 0.95, "efficientnet": 0.95, "mobilenetv3": 0.95, "convnext": 0.95,
                "bert": 0.90}
TOLERANCE = 1e-4

GELU = {"dynamo": {"Gelu"}, "torchscript": {"Erf"}}
#: Ops each export must hold (GELU added per exporter for the nets in GELU_NETS).
REQUIRED_OPS = {
    "vit": {"Conv", "LayerNormalization", "Softmax", "MatMul", "Transpose", "Concat"},
    "efficientnet": {"Conv", "Sigmoid", "Mul"},
    "mobilenetv3": {"Conv", "HardSwish", "HardSigmoid", "Relu", "Mul"},
    "convnext": {"Conv", "LayerNormalization", "Transpose"},
    "bert": {"Gather", "LayerNormalization", "Softmax", "MatMul", "Transpose"},
}
GELU_NETS = {"vit", "convnext", "bert"}
ATTENTION_NETS = {"vit", "bert"}


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> BeyondReluBuilder:
    return BeyondReluBuilder(tmp_path_factory.mktemp("beyond-relu"))


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_data() -> None:
    x_train, y_train, x_test, y_test = digits_data("vit")
    assert x_train.shape == (1257, 1, 8, 8) and x_test.shape == (540, 1, 8, 8)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    counts = np.bincount(np.concatenate([y_train, y_test]))
    assert np.abs(np.bincount(y_test) - 0.3 * counts).max() < 1    # stratified
    ids_train, ids_y, ids_test, ids_y_test = digits_data("bert")
    assert ids_train.shape == (1257, 16) and ids_test.shape == (540, 16)
    assert ids_train.dtype == np.int64 and 0 <= ids_train.min() and ids_train.max() < 16
    np.testing.assert_array_equal(ids_y, y_train)
    np.testing.assert_array_equal(ids_y_test, y_test)


@pytest.mark.parametrize("arch,exporter", IDS, ids=[f"{a}-{e}" for a, e in IDS])
def test_export(builder: BeyondReluBuilder, arch: str, exporter: str) -> None:
    model = builder.build(arch, exporter)
    x_train, _, x_test, y_test = digits_data(arch)
    with np.load(model.calib) as calib:
        np.testing.assert_array_equal(calib["x"], x_train[:CALIB])
    with np.load(model.test) as test:
        np.testing.assert_array_equal(test["x"], x_test)
        np.testing.assert_array_equal(test["y"], y_test)

    logits = ort_outputs(model.ann, x_test)[0]
    expected = torch_logits(builder.net(arch), x_test)
    np.testing.assert_allclose(logits, expected, rtol=TOLERANCE, atol=TOLERANCE)
    accuracy = float((logits.argmax(axis=1) == y_test).mean())
    assert model.ann_accuracy == accuracy
    assert accuracy >= MIN_ACCURACY[arch], f"{model.id}: ANN accuracy {accuracy:.4f}"


@pytest.mark.parametrize("arch,exporter", IDS, ids=[f"{a}-{e}" for a, e in IDS])
def test_ops(builder: BeyondReluBuilder, arch: str, exporter: str) -> None:
    model = builder.build(arch, exporter)
    ops = op_types(model.ann)
    other = "torchscript" if exporter == "dynamo" else "dynamo"
    required = REQUIRED_OPS[arch] | (GELU[exporter] if arch in GELU_NETS else set())
    assert required <= ops, f"{model.id}: missing {sorted(required - ops)} in {sorted(ops)}"
    assert not ops & GELU[other], f"{model.id}: {sorted(ops)}"
    if arch != "mobilenetv3":
        assert "Relu" not in ops, f"{model.id}: {sorted(ops)}"
    if arch in ATTENTION_NETS:
        perms = [list(attribute.ints) for node in onnx.load(str(model.ann)).graph.node
                 if node.op_type == "Transpose" for attribute in node.attribute
                 if attribute.name == "perm"]
        assert [1, 0, 2] in perms, f"{model.id}: Transpose perms {perms}"


# --------------------------------------------------------------------------- conversion

#: Conversion checks by default for one exporter per net (alternating); ``-m slow``
#: runs the other (SNN accuracy on the first SAMPLES test inputs, T = 64).
CONVERT_IDS = [pytest.param(arch, exporter, id=f"{arch}-{exporter}",
                            marks=() if (index + EXPORTERS.index(exporter)) % 2 else
                            pytest.mark.slow)
               for index, arch in enumerate(ARCHITECTURES) for exporter in EXPORTERS]
SAMPLES = 100
#: Ops that carry spikes unchanged in value pattern: moved, pooled, scaled by constants.
CARRIERS = {"Reshape", "Transpose", "Flatten", "Pad", "Concat", "MaxPool", "AveragePool",
            "GlobalAveragePool", "ReduceMean", "Squeeze", "Unsqueeze", "Slice", "Gather",
            "Identity", "Mul",
            "Div", "Split", "Expand", "Tile"}


def weighted_layer_sources(model: onnx.ModelProto) -> dict[str, str]:
    """For each Conv/Gemm/MatMul with an initializer weight: "spikes" when its data input
    comes from IFNodes through CARRIERS only, "input" when from a graph input, else the
    op type that feeds it."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    inputs = {value.name for value in model.graph.input}

    def source(name: str) -> str:
        if name in inputs:
            return "input"
        node = producers.get(name)
        if node is None or node.op_type == "Constant":
            return "constant"
        if node.op_type == "IFNode":
            return "spikes"
        if node.op_type not in CARRIERS:
            return node.op_type
        data = node.input if node.op_type in ("Concat", "Mul", "Div") else node.input[:1]
        found = {source(i) for i in data if i and i not in constants} - {"constant"}
        return found.pop() if len(found) == 1 else "+".join(sorted(found)) or "constant"

    return {node.name: source(node.input[0]) for node in model.graph.node
            if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1
            and node.input[1] in constants}


@pytest.mark.parametrize("arch,exporter", CONVERT_IDS)
def test_converts_by_default_and_weighted_layers_read_spikes(builder: BeyondReluBuilder,
                                                             arch: str, exporter: str) -> None:
    from onnx_snn import convert
    from onnx_snn.measure.evaluation import snn_accuracy

    model = builder.build(arch, exporter)
    with np.load(model.calib) as calib, np.load(model.test) as test:
        x_calib, x, y = calib["x"], test["x"][:SAMPLES], test["y"][:SAMPLES]
    snn = convert(str(model.ann), x_calib, progress=False)
    ann = float((ort_outputs(model.ann, x)[0].argmax(axis=1) == y).mean())
    accuracy = snn_accuracy(snn.model, x, y, [64], batch_size=SAMPLES)[64]
    assert accuracy >= ann - 0.03, f"{model.id}: SNN {accuracy:.3f} at T=64, ANN {ann:.3f}"
    sources = weighted_layer_sources(snn.model)
    assert set(sources.values()) <= {"spikes", "input"}, sources
    assert list(sources.values()).count("input") <= 1, sources  # the first layer


def test_vit_eval_in_chunks_writes_the_same_json(builder: BeyondReluBuilder,
                                                 tmp_path: Path) -> None:
    """The ViT's time-difference ops (LayerNorm, GELU, attention) carry their running sums
    over calls of 3 steps: eval writes the JSON of one call, byte for byte."""
    from onnx_snn import SpikingSession
    from onnx_snn.cli import main
    from onnx_snn.runtime.chunks import BYTES_PER_CARRIED_VALUE

    model = builder.build("vit", "torchscript")
    with np.load(model.calib) as calib, np.load(model.test) as test:
        np.savez(tmp_path / "calib.npz", x=calib["x"])
        np.savez(tmp_path / "test.npz", x=test["x"][:24], y=test["y"][:24])
    snn = tmp_path / "snn.onnx"
    assert main(["convert", str(model.ann), "--calib", str(tmp_path / "calib.npz"), "-o",
                 str(snn), "--no-progress"]) == 0
    session = SpikingSession(snn)
    limit = (session.output_bytes(16, 24) + 3 * session.step_bytes
             + session.carried_values * BYTES_PER_CARRIED_VALUE)
    assert SpikingSession(snn, memory_limit=limit).plan(16, 24).steps == 3
    results = []
    for extra in ([], ["--memory-limit", str(limit)]):
        results.append(tmp_path / f"eval{len(results)}.json")
        assert main(["eval", str(snn), "--data", str(tmp_path / "test.npz"), "--timesteps",
                     "4,16", "--ann", str(model.ann), "--fidelity", "--json",
                     str(results[-1]), *extra]) == 0
    assert results[0].read_bytes() == results[1].read_bytes()


@pytest.mark.parametrize("arch,exporter", CONVERT_IDS)
def test_a_custom_neuron_is_refused_up_front_naming_the_capability(
        builder: BeyondReluBuilder, arch: str, exporter: str) -> None:
    """The example's LIF neuron declares no capabilities. Each of these nets has
    weighted layers that read values of either sign (the IF conversion puts signed
    neurons there), so the LIF conversion is refused before calibration, naming the
    site and the 'signed' capability; with signed sites it would silently be wrong."""
    from conftest import load_example

    from onnx_snn import NeuronFactory, OnnxSnnError, convert

    lif = load_example("custom_neuron").LIFNeuron
    model = builder.build(arch, exporter)
    with np.load(model.calib) as calib:
        x_calib = calib["x"][:16]
    signed = [layer.node for layer in convert(str(model.ann), x_calib, progress=False).layers
              if layer.neuron.signed]
    assert signed, f"{model.id}: no signed site"
    with pytest.raises(OnnxSnnError, match=f"'{signed[0]}' needs a signed neuron.*'signed' "
                                           "capability"):
        convert(str(model.ann), "no data: refused before calibration", progress=False,
                neuron_factory=NeuronFactory(lif, decay=0.9))
