"""The architecture zoo through the real command line: inspect, convert (default,
``--preset best``, ``--format standard``, ``--format streaming``; ``--format chunked`` in
the slow run), eval (also in chunks of steps, under a memory limit) and report.

Models come from ``tests/zoo_models.py`` (plain-torch ResNet-18/50, VGG-BN,
DenseNet, Inception, SqueezeNet, ShuffleNetV2, MobileNetV2 and RegNet-style nets on
[N, 3, 32, 32], exported with the dynamo and the TorchScript exporter, plus the
skl2onnx digits MLPClassifier with and without ZipMap). Each (model, exporter) is
exported once per session and each (model, convert variant) converted once, in a
pytest temporary folder.

The CLI runs in-process (``onnx_snn.cli.main``, which returns the exit status);
``test_console_script`` runs the installed ``onnx-snn`` once as a subprocess.

Independent answers: the torch labels are the ANN's own argmax computed with
onnxruntime on the exported file, so ``eval --ann`` must print 1.0000; for the
skl2onnx models the labels are the true digits and the ANN accuracy must equal
``clf.score`` exactly; the number of converted layers must equal the number of
ReLU/ReLU6 in the source net, plus one signed neuron per distinct tensor with
negative values that a Conv or Linear of the torch net reads on noise input, the
input itself aside (found with forward hooks: a linear bottleneck's output, which
no rectifier bounds).

The default run holds one test per architecture (exporters alternating) and the
other convert variants for a few; ``-m slow`` runs every architecture x exporter x
variant, one test per step so that every failure is reported.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import load_example
from torch import nn
from zoo_models import (
    ARCHITECTURES,
    EXPORTERS,
    ZooBuilder,
    ZooModel,
    build_net,
    calib_images,
    held_out_images,
    ort_outputs,
    torch_logits,
)

from onnx_snn import NeuronFactory, OnnxSnnError, SpikingSession, convert
from onnx_snn.cli import main

TORCH_IDS = [f"{arch}-{exporter}" for arch in ARCHITECTURES for exporter in EXPORTERS]
SKLEARN_IDS = ["sklearn_mlp-zipmap", "sklearn_mlp-tensor"]
ALL_IDS = TORCH_IDS + SKLEARN_IDS

#: One per architecture, the exporters alternating (TorchScript first: 4 dynamo exports).
FAST_IDS = [f"{arch}-{EXPORTERS[(i + 1) % 2]}" for i, arch in enumerate(ARCHITECTURES)] \
    + SKLEARN_IDS
#: In the default run the report's rate-vs-ANN scatter plot costs ~0.3 s per neuron layer,
#: so ``report`` gets ``--ann`` for these (both exporters, few layers), and
#: runs without it for the others (the slow run does both for every model and variant).
FAST_REPORT_ANN = {"vgg-torchscript", "resnet18-torchscript", "squeezenet-dynamo",
                   *SKLEARN_IDS}
#: Models that also get the other convert variants (convert + eval) in the default run.
FAST_VARIANT_IDS = ["resnet50-dynamo", "shufflenet-torchscript", "mobilenetv2-dynamo",
                    "sklearn_mlp-zipmap"]
#: ... and those that also get the report for every variant (the plots cost ~1-4 s each).
FAST_VARIANT_REPORT_IDS = ["sklearn_mlp-tensor"]

#: convert variant -> extra CLI arguments.
VARIANTS = {
    "default": [],
    "best": ["--preset", "best"],
    "standard": ["--format", "standard"],
    "streaming": ["--format", "streaming"],
    "chunked": ["--format", "chunked"],
}
OTHER_VARIANTS = [v for v in VARIANTS if v != "default"]
#: The default run leaves the chunked format to the slow run: its convert and eval are
#: the onnx-snn format's plus states (tests/runtime/test_chunks.py checks the bits).
FAST_OTHER_VARIANTS = [v for v in OTHER_VARIANTS if v != "chunked"]
#: Models whose eval runs in chunks in the default run (residual; a label output summed
#: over the steps); the slow run does all.
FAST_CHUNK_IDS = ["resnet18-torchscript", "sklearn_mlp-zipmap"]

EVAL_STEPS = (4, 16)
REPORT_STEPS = 8
REPORT_FILES = ("report.json", "report.md", "accuracy.png", "firing_rates.png",
                "sops_vs_macs.png", "rate_vs_ann.png")


# --------------------------------------------------------------------------- CLI

@dataclass
class Run:
    args: list[str]
    rc: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The CLI's error line (or the last line on stderr)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("onnx-snn: error")]
        return (errors or lines or ["(nothing on stderr)"])[-1]


def cli(*args) -> Run:
    """``onnx-snn ARGS`` in-process, with stdout and stderr captured."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():  # main() replaces warnings.showwarning
        try:
            rc = main(argv)
        except SystemExit as exit_:  # argparse usage errors
            rc = exit_.code if isinstance(exit_.code, int) else 1
    return Run(argv, rc, out.getvalue(), err.getvalue())


def check_ok(run: Run, step: str) -> None:
    assert run.rc == 0, f"{step} exit {run.rc}: {run.error}"


# --------------------------------------------------------------------------- session cache

@dataclass
class Conversion:
    run: Run
    snn: Path


class Zoo:
    """Builds each model and each conversion once per session."""

    def __init__(self, directory: Path) -> None:
        self.builder = ZooBuilder(directory)
        self._conversions: dict[tuple[str, str], Conversion] = {}

    def model(self, model_id: str) -> ZooModel:
        arch, kind = model_id.rsplit("-", 1)
        if arch == "sklearn_mlp":
            return self.builder.sklearn(zipmap=kind == "zipmap")
        return self.builder.build(arch, kind)

    def convert(self, model_id: str, variant: str) -> Conversion:
        key = (model_id, variant)
        if key not in self._conversions:
            model = self.model(model_id)
            snn = model.directory / f"snn-{variant}.onnx"
            run = cli("convert", model.ann, "--calib", model.calib, "-o", snn, "--no-progress",
                      "--json", model.directory / f"convert-{variant}.json", *VARIANTS[variant])
            self._conversions[key] = Conversion(run, snn)
        return self._conversions[key]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def expected_layers(model_id: str) -> tuple[int, int]:
    """(ReLU and ReLU6 modules of the source net, each used once; tensors with negative
    values that its Conv and Linear modules read, from torch forward hooks)."""
    arch = model_id.rsplit("-", 1)[0]
    if arch == "sklearn_mlp":
        from pattern_models import digits_classifier
        return len(digits_classifier()[0].hidden_layer_sizes), 0
    import torch

    net = build_net(arch)
    signed: list = []  # kept alive, so that no two are the same object

    def record(module, inputs, output) -> None:
        if bool((inputs[0] < 0).any()) and not any(inputs[0] is t for t in signed):
            signed.append(inputs[0])

    hooks = [m.register_forward_hook(record) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    noise = torch.from_numpy(np.random.default_rng(0).normal(
        scale=3.0, size=calib_images().shape).astype(np.float32))  # reaches every sign
    with torch.no_grad():
        net(noise)
    signed = [tensor for tensor in signed if tensor is not noise]
    for hook in hooks:
        hook.remove()
    return sum(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in net.modules()), len(signed)


# --------------------------------------------------------------------------- steps

def check_inspect(zoo: Zoo, model_id: str) -> None:
    model = zoo.model(model_id)
    run = cli("inspect", model.ann, "--json", model.directory / "inspect.json")
    check_ok(run, "inspect")
    neurons, signed = expected_layers(model_id)
    assert f"{neurons} neurons, {signed} signed neurons," in run.out, run.out
    data = json.loads((model.directory / "inspect.json").read_text())
    assert sum(a["action"] == "neuron" for a in data["ops"]) == neurons


def check_convert(zoo: Zoo, model_id: str, variant: str) -> Conversion:
    conversion = zoo.convert(model_id, variant)
    check_ok(conversion.run, f"convert {variant}")
    assert conversion.snn.is_file()
    model = zoo.model(model_id)
    report = json.loads((model.directory / f"convert-{variant}.json").read_text())
    assert len(report["layers"]) == sum(expected_layers(model_id))
    fmt = VARIANTS[variant][1] if VARIANTS[variant][:1] == ["--format"] else "onnx-snn"
    assert f"({fmt} format)" in conversion.run.out
    return conversion


def check_eval(zoo: Zoo, model_id: str, variant: str) -> dict:
    model, conversion = zoo.model(model_id), zoo.convert(model_id, variant)
    check_ok(conversion.run, f"convert {variant} (before eval)")
    result = model.directory / f"eval-{variant}.json"
    run = cli("eval", conversion.snn, "--data", model.test,
              "--timesteps", ",".join(map(str, EVAL_STEPS)), "--ann", model.ann,
              "--json", result)
    check_ok(run, "eval")
    data = json.loads(result.read_text())
    assert data["ann_accuracy"] == model.expected_ann_accuracy, \
        f"eval: ANN accuracy {data['ann_accuracy']} != {model.expected_ann_accuracy}"
    assert f"ANN accuracy: {model.expected_ann_accuracy:.4f}" in run.out
    assert set(data["snn_accuracy"]) == {str(t) for t in EVAL_STEPS}
    assert all(0.0 <= a <= 1.0 for a in data["snn_accuracy"].values())
    return data


def check_report(zoo: Zoo, model_id: str, variant: str, ann: bool = True) -> dict:
    model, conversion = zoo.model(model_id), zoo.convert(model_id, variant)
    check_ok(conversion.run, f"convert {variant} (before report)")
    outdir = model.directory / f"report-{variant}{'' if ann else '-noann'}"
    run = cli("report", conversion.snn, "--data", model.test,
              "--timesteps", REPORT_STEPS, "-o", outdir, *(["--ann", model.ann] if ann else []))
    check_ok(run, "report")
    files = REPORT_FILES if ann else REPORT_FILES[:-1]
    assert all((outdir / name).is_file() for name in files), sorted(outdir.iterdir())
    data = json.loads((outdir / "report.json").read_text())
    assert len(data["accuracy_curve"]) == REPORT_STEPS
    assert all(0.0 <= a <= 1.0 for a in data["accuracy_curve"])
    assert data["ann_accuracy"] == (model.expected_ann_accuracy if ann else None)
    assert len(data["layers"]) == sum(expected_layers(model_id))
    for layer in data["layers"]:
        assert 0.0 <= layer["firing_rate"] <= 1.0, layer
    return data


def check_pipeline(zoo: Zoo, model_id: str, variant: str, ann: bool = True) -> None:
    """convert, eval, report; the report's accuracy after t = 4 is eval's at T = 4."""
    check_convert(zoo, model_id, variant)
    evaluated = check_eval(zoo, model_id, variant)
    reported = check_report(zoo, model_id, variant, ann=ann)
    assert reported["accuracy_curve"][3] == evaluated["snn_accuracy"]["4"], \
        f"report: accuracy after t=4 {reported['accuracy_curve'][3]} != eval's " \
        f"{evaluated['snn_accuracy']['4']}"


# --------------------------------------------------------------------------- fast subset

@pytest.mark.parametrize("model_id", FAST_IDS)
def test_zoo_pipeline(zoo: Zoo, model_id: str) -> None:
    """inspect, convert (default), eval, report (with --ann for FAST_REPORT_ANN)."""
    check_inspect(zoo, model_id)
    check_pipeline(zoo, model_id, "default", ann=model_id in FAST_REPORT_ANN)


@pytest.mark.parametrize("variant", FAST_OTHER_VARIANTS)
@pytest.mark.parametrize("model_id", FAST_VARIANT_IDS)
def test_zoo_variant(zoo: Zoo, model_id: str, variant: str) -> None:
    """--preset best, --format standard, --format streaming: convert, eval."""
    check_convert(zoo, model_id, variant)
    check_eval(zoo, model_id, variant)


@pytest.mark.parametrize("variant", FAST_OTHER_VARIANTS)
@pytest.mark.parametrize("model_id", FAST_VARIANT_REPORT_IDS)
def test_zoo_variant_report(zoo: Zoo, model_id: str, variant: str) -> None:
    """--preset best, --format standard, --format streaming: convert, eval, report."""
    check_pipeline(zoo, model_id, variant)


def chunking_limit(snn: Path, timesteps: int, samples: int) -> str:
    """A --memory-limit under which a run of ``samples`` samples for ``timesteps`` steps
    goes in calls of 3 steps of one sample (the outputs of every step kept aside)."""
    from onnx_snn import SpikingSession
    from onnx_snn.runtime.chunks import BYTES_PER_CARRIED_VALUE

    session = SpikingSession(snn)
    limit = (session.output_bytes(timesteps, samples) + 3 * session.step_bytes
             + session.carried_values * BYTES_PER_CARRIED_VALUE)
    assert SpikingSession(snn, memory_limit=limit).plan(timesteps, samples).steps == 3
    return str(limit)


@pytest.mark.parametrize("model_id", [
    pytest.param(i, marks=() if i in FAST_CHUNK_IDS else pytest.mark.slow) for i in ALL_IDS])
def test_zoo_eval_in_chunks_writes_the_same_json(zoo: Zoo, model_id: str) -> None:
    """eval under a memory limit that cuts each sample's T = 16 steps into calls of 3
    steps writes the JSON of one call on the whole batch, byte for byte."""
    model, conversion = zoo.model(model_id), zoo.convert(model_id, "default")
    check_ok(conversion.run, "convert")
    samples = len(np.load(model.test)["x"])
    results = []
    for limit in ([], ["--memory-limit", chunking_limit(conversion.snn, 16, samples)]):
        results.append(model.directory / f"eval-chunks{len(results)}.json")
        check_ok(cli("eval", conversion.snn, "--data", model.test, "--timesteps", "4,16",
                     "--json", results[-1], *limit), "eval")
    assert results[0].read_bytes() == results[1].read_bytes()


def test_zoo_report_in_chunks_writes_the_same_json(zoo: Zoo) -> None:
    """report the same, on a ResNet-18 with --ann (fidelity included)."""
    model_id = "resnet18-torchscript"
    model, conversion = zoo.model(model_id), zoo.convert(model_id, "default")
    check_ok(conversion.run, "convert")
    samples = len(np.load(model.test)["x"])
    reports, runs = [], []
    for limit in ([], ["--memory-limit", chunking_limit(conversion.snn, REPORT_STEPS, samples),
                       "--verbose"]):
        reports.append(model.directory / f"report-chunks{len(reports)}")
        runs.append(cli("report", conversion.snn, "--data", model.test, "--ann", model.ann,
                        "--timesteps", REPORT_STEPS, "-o", reports[-1], *limit))
        check_ok(runs[-1], "report")
    assert "runs as calls of" in runs[1].err, runs[1].err  # the limit did cut the runs
    assert (reports[0] / "report.json").read_bytes() == (reports[1] / "report.json").read_bytes()


@pytest.mark.parametrize("model_id", [i for i in FAST_IDS if i in TORCH_IDS])
def test_zoo_export_matches_torch(zoo: Zoo, model_id: str) -> None:
    """export_torch: the exported ANN in onnxruntime computes the torch net."""
    model = zoo.model(model_id)
    expected = torch_logits(model.arch, held_out_images())
    got = ort_outputs(model.ann, held_out_images())[0]
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_console_script(zoo: Zoo) -> None:
    """The installed ``onnx-snn`` script, as a user types it: convert (then eval the
    result in-process)."""
    exe = shutil.which("onnx-snn")
    assert exe, "onnx-snn is not on PATH"
    model = zoo.model("sklearn_mlp-tensor")
    snn = model.directory / "snn-subprocess.onnx"
    convert = subprocess.run([exe, "convert", str(model.ann), "--calib", str(model.calib),
                              "-o", str(snn), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0, (convert.stderr.strip().splitlines() or ["?"])[-1]
    assert "converted 2 Relu into spiking neurons" in convert.stdout, convert.stdout
    run = cli("eval", snn, "--data", model.test, "--timesteps", "4,16", "--ann", model.ann)
    check_ok(run, "eval")
    assert f"ANN accuracy: {model.expected_ann_accuracy:.4f}" in run.out


# --------------------------------------------------------------------------- exhaustive

@pytest.mark.slow
@pytest.mark.parametrize("model_id", ALL_IDS)
def test_zoo_all_inspect(zoo: Zoo, model_id: str) -> None:
    check_inspect(zoo, model_id)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", TORCH_IDS)
def test_zoo_all_export_matches_torch(zoo: Zoo, model_id: str) -> None:
    test_zoo_export_matches_torch(zoo, model_id)


#: The steps of the exhaustive run, one test each so that every failure is reported.
STEPS = {"convert": check_convert, "eval": check_eval, "report": check_report,
         "report-without-ann": lambda zoo, model_id, variant:
         check_report(zoo, model_id, variant, ann=False)}


@pytest.mark.slow
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("model_id", ALL_IDS)
def test_zoo_all_steps(zoo: Zoo, model_id: str, variant: str, step: str) -> None:
    STEPS[step](zoo, model_id, variant)


@pytest.mark.filterwarnings("ignore:MaxPool")  # the keep policy's caveat, not this test's
@pytest.mark.parametrize("model_id", FAST_IDS)
def test_a_custom_neuron_converts_or_names_the_capability_it_lacks(zoo: Zoo,
                                                                   model_id: str) -> None:
    """The example's LIF neuron (no declared capabilities) on every zoo net: where the
    IF conversion needs no signed neuron, it converts, and at decay 1 (no leak: the IF
    dynamics) its outputs are the IF model's bit for bit; elsewhere it is refused before
    calibration, naming the site and the 'signed' capability."""
    lif = load_example("custom_neuron").LIFNeuron
    model = zoo.model(model_id)
    x = np.load(model.calib)["x"]
    plain = convert(str(model.ann), x, progress=False)
    signed_sites = sum(layer.neuron.signed for layer in plain.layers)
    if signed_sites:
        with pytest.raises(OnnxSnnError, match="needs a signed neuron.*'signed' capability"):
            convert(str(model.ann), x, progress=False,
                    neuron_factory=NeuronFactory(lif, decay=1.0))
        return
    custom = convert(str(model.ann), x, progress=False,
                     neuron_factory=NeuronFactory(lif, decay=1.0))
    assert {type(layer.neuron).__name__ for layer in custom.layers} == {"LIFNeuron"}
    for name, value in SpikingSession(custom.model).run(x[:4], 6).outputs.items():
        np.testing.assert_array_equal(value, SpikingSession(plain.model).run(x[:4], 6)
                                      .outputs[name])
