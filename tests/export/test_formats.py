"""The three model formats compute the same outputs bit for bit; each is valid on its own."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import load_example, mlp_model
from test_convert import cnn_model

from onnx_snn import NeuronFactory, OnnxSnnError, convert
from onnx_snn.cli import main
from onnx_snn.export.formats import FORMATS, export_format, to_standard, to_streaming
from onnx_snn.io.metadata import STREAMING_STATES, TIMESTEPS
from onnx_snn.runtime import SpikingSession
from onnx_snn.runtime.streaming import StreamingSession, open_session

SAMPLE_SHAPES = {"mlp": (8,), "cnn": (2, 8, 8)}


def ann_model(kind: str) -> onnx.ModelProto:
    return mlp_model([8, 16, 16, 4], seed=3) if kind == "mlp" else cnn_model(seed=1)


def samples(kind: str, *leading: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 1.5, (*leading, *SAMPLE_SHAPES[kind])).astype(np.float32)


@pytest.fixture(scope="module")
def sessions():
    """``sessions(kind, v_reset, v_init)``: {format: session}, converted once per setting.

    The onnx-snn format runs twice: with the native kernels when they are built,
    and with the IFNode function body that the standard format must match.
    """
    cache: dict[tuple, dict[str, SpikingSession]] = {}

    def get(kind: str, v_reset: float | None, v_init: float, max_spikes: int = 1,
            signed: bool = False) -> dict[str, SpikingSession]:
        key = (kind, v_reset, v_init, max_spikes, signed)
        if key not in cache:
            factory = NeuronFactory(v_reset=v_reset, v_init=v_init, max_spikes=max_spikes)
            model = convert(ann_model(kind), samples(kind, 32), neuron_factory=factory,
                            spike_counts=True, progress=False).model
            if signed:  # convert refuses signed neurons on Relus; the formats take them
                for node in model.graph.node:
                    for attribute in node.attribute:
                        if node.op_type == "IFNode" and attribute.name == "signed":
                            attribute.i = 1
            cache[key] = {"onnx-snn": SpikingSession(model),
                          "function body": SpikingSession(model, native=False),
                          "standard": SpikingSession(to_standard(model)),
                          "streaming": StreamingSession(to_streaming(model))}
        return cache[key]
    return get


def assert_same_outputs(results: dict, steps: int, batch: int) -> None:
    """Every format gives every output bit for bit as the onnx-snn format does."""
    expected = results.pop("onnx-snn").outputs
    for fmt, result in results.items():
        assert list(result.outputs) == list(expected), fmt
        for name, value in expected.items():
            np.testing.assert_array_equal(result.outputs[name], value, err_msg=f"{fmt} {name}")
    first = next(iter(expected.values()))
    assert first.shape[:2] == (steps, batch)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("v_reset", [None, 0.0], ids=["soft", "hard"])
@pytest.mark.parametrize("v_init", [0.0, 0.5])
@pytest.mark.parametrize("steps, batch", [(1, 1), (1, 3), (7, 1), (7, 3)])
@pytest.mark.parametrize("sequence", [False, True], ids=["direct", "sequence"])
def test_formats_agree_bit_for_bit(sessions, kind, v_reset, v_init, steps, batch,
                                   sequence) -> None:
    x = samples(kind, steps, batch, seed=steps + batch) if sequence else samples(kind, batch)
    results = {fmt: session.run(x, steps, sequence=sequence)
               for fmt, session in sessions(kind, v_reset, v_init).items()}
    counts = sum(v.sum() for name, v in results["onnx-snn"].outputs.items()
                 if name.endswith("__spike_count"))
    assert counts > 0 or steps == 1  # the neurons fire: the comparison is not vacuous
    assert_same_outputs(results, steps, batch)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("v_reset", [None, 0.0], ids=["soft", "hard"])
@pytest.mark.parametrize("neuron", [{"max_spikes": 4}, {"max_spikes": 2, "signed": True}],
                         ids=["burst", "signed"])
@pytest.mark.parametrize("sequence", [False, True], ids=["direct", "sequence"])
def test_burst_and_signed_formats_agree_bit_for_bit(sessions, kind, v_reset, neuron,
                                                    sequence) -> None:
    steps, batch = 5, 3
    x = samples(kind, steps, batch, seed=7) if sequence else samples(kind, batch)
    results = {fmt: session.run(x, steps, sequence=sequence)
               for fmt, session in sessions(kind, v_reset, 0.5, **neuron).items()}
    counts = results["onnx-snn"].outputs
    assert sum(v.sum() for name, v in counts.items() if name.endswith("__spike_count")) > 0
    assert_same_outputs(results, steps, batch)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)


@pytest.mark.parametrize("v_reset", [None, -0.25], ids=["soft", "hard"])
def test_standard_model_is_plain_onnx(v_reset) -> None:
    ann, x = ann_model("cnn"), samples("cnn", 4)
    result = convert(ann, x, neuron_factory=NeuronFactory(v_reset=v_reset, v_init=0.5),
                     format="standard", progress=False)
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    assert not model.functions
    assert [entry.domain for entry in model.opset_import] == [""]
    nodes = list(_all_nodes(model.graph))
    assert {node.domain for node in nodes} == {""}
    assert "If" not in {node.op_type for node in nodes}
    scans = [node for node in nodes if node.op_type == "Scan"]
    assert len(scans) == len(result.layers)
    for scan in scans:  # the body declares the rank of its inputs and outputs
        body = scan.attribute[0].g
        assert all(len(v.type.tensor_type.shape.dim) == 1 for v in [*body.input, *body.output])
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = plain.run(None, {"x": x[None], TIMESTEPS: np.array(5, np.int64)})[0]
    expected = convert(ann, x, neuron_factory=NeuronFactory(v_reset=v_reset, v_init=0.5),
                       progress=False)
    np.testing.assert_array_equal(got, SpikingSession(expected.model).run(x, 5).per_step)


@pytest.mark.parametrize("opset", [13, 17])
def test_streaming_model_steps_in_plain_onnxruntime(opset) -> None:
    """Step 0 needs no state feed; then each ``v_next`` [N, F] is fed back as ``v``."""
    ann, x = mlp_model([8, 16, 16, 4], seed=3, opset=opset), samples("mlp", 3)
    folded = convert(ann, x, neuron_factory=NeuronFactory(v_init=0.5), progress=False).model
    model = to_streaming(folded)
    onnx.checker.check_model(model, full_check=True)
    assert TIMESTEPS not in [value.name for value in model.graph.input]
    assert not model.functions and [e.domain for e in model.opset_import] == [""]
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata["onnx_snn.version"]
    states = json.loads(metadata[STREAMING_STATES])
    assert [s["node"] for s in states] == ["relu0", "relu1"]
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in plain.get_inputs()] == ["x"]
    names = [o.name for o in plain.get_outputs()]
    feed_back, outputs = {}, []
    for _ in range(6):
        results = dict(zip(names, plain.run(None, {"x": x[None], **feed_back})))
        feed_back = {s["input"]: results[s["output"]] for s in states}
        outputs.append(results["y"])
    assert feed_back["relu0__v"].shape == (3, 16)
    np.testing.assert_array_equal(np.concatenate(outputs),
                                  SpikingSession(folded).run(x, 6).per_step)


def test_streaming_session_step_reset_and_open_session() -> None:
    ann, x_seq = ann_model("cnn"), samples("cnn", 5, 2)
    folded = convert(ann, x_seq[0], spike_counts=True, progress=False).model
    session = open_session(to_streaming(folded))
    assert isinstance(session, StreamingSession)
    assert type(open_session(folded)) is SpikingSession
    expected = SpikingSession(folded).run(x_seq, sequence=True).per_step
    for _ in range(2):  # reset() starts over from the initial potentials
        frames = [x_seq[0], x_seq[1][None], {"x": x_seq[2]}, *x_seq[3:]]
        steps = [session.step(frame) for frame in frames]
        assert steps[0]["y"].shape == (1, 2, 5) and steps[0]["relu1__spike_count"].shape == (2,)
        np.testing.assert_array_equal(np.concatenate([s["y"] for s in steps]), expected)
        session.reset()


def test_streaming_session_errors() -> None:
    ann, x = ann_model("mlp"), samples("mlp", 3)
    folded = convert(ann, x, progress=False).model
    with pytest.raises(OnnxSnnError, match="not a streaming model"):
        StreamingSession(folded)
    session = StreamingSession(to_streaming(folded))
    with pytest.raises(OnnxSnnError, match="one frame"):
        session.step(samples("mlp", 2, 3))
    with pytest.raises(OnnxSnnError, match="cannot run for 4 steps"):
        session.run(samples("mlp", 3, 3), 4, sequence=True)
    with pytest.raises(OnnxSnnError, match="not an onnx-snn format model"):
        to_streaming(ann)


def test_odd_and_clashing_node_names_give_unique_valid_state_names() -> None:
    ann = mlp_model([8, 16, 16, 4], seed=3)
    relus = [node for node in ann.graph.node if node.op_type == "Relu"]
    relus[0].name, relus[1].name = "block/relu:0", "block_relu_0"
    x = samples("mlp", 2)
    folded = convert(ann, x, progress=False).model
    model = to_streaming(folded)
    states = json.loads({e.key: e.value for e in model.metadata_props}[STREAMING_STATES])
    assert [(s["input"], s["output"]) for s in states] == [
        ("block_relu_0__v", "block_relu_0__v_next"),
        ("block_relu_0__v_1", "block_relu_0__v_next_1")]
    onnx.checker.check_model(to_standard(folded), full_check=True)
    results = {"onnx-snn": SpikingSession(folded).run(x, 4),
               "standard": SpikingSession(to_standard(folded)).run(x, 4),
               "streaming": StreamingSession(model).run(x, 4)}
    assert_same_outputs(results, 4, 2)


def test_user_neurons_are_inlined_in_standard_and_refused_in_streaming() -> None:
    lif = load_example("custom_neuron").LIFNeuron
    ann, x = ann_model("mlp"), samples("mlp", 3)
    folded = convert(ann, x, neuron_factory=NeuronFactory(lif, decay=0.9), progress=False).model
    standard = to_standard(folded)
    onnx.checker.check_model(standard, full_check=True)
    assert {node.domain for node in _all_nodes(standard.graph)} == {""}
    np.testing.assert_array_equal(SpikingSession(standard).run(x, 6).per_step,
                                  SpikingSession(folded).run(x, 6).per_step)
    with pytest.raises(OnnxSnnError, match="my_neurons::LIFNode"):
        to_streaming(folded)


def test_unknown_format_is_refused_before_calibration() -> None:
    ann = ann_model("mlp")
    with pytest.raises(OnnxSnnError, match="unknown format 'onnx'.*standard"):
        convert(ann, None, format="onnx")
    with pytest.raises(OnnxSnnError, match="unknown format"):
        export_format(ann, "Standard")
    assert FORMATS == ("onnx-snn", "standard", "streaming", "chunked")


def test_cli_convert_formats_round_trip(tmp_path, capsys) -> None:
    ann, x = ann_model("mlp"), samples("mlp", 60)
    onnx.save(ann, tmp_path / "ann.onnx")
    np.savez(tmp_path / "calib.npz", x=x)
    y = ort.InferenceSession(ann.SerializeToString(), providers=["CPUExecutionProvider"]) \
        .run(None, {"x": x})[0].argmax(axis=1)
    np.savez(tmp_path / "test.npz", x=x, y=y)
    accuracy = {}
    for fmt in FORMATS:
        path, result = tmp_path / f"{fmt}.onnx", tmp_path / f"{fmt}.json"
        assert main(["convert", str(tmp_path / "ann.onnx"), "--calib", str(tmp_path / "calib.npz"),
                     "--format", fmt, "--no-progress", "-o", str(path)]) == 0
        assert f"({fmt} format)" in capsys.readouterr().out
        onnx.checker.check_model(str(path), full_check=True)
        assert main(["eval", str(path), "--data", str(tmp_path / "test.npz"),
                     "--timesteps", "3,8", "--json", str(result)]) == 0
        accuracy[fmt] = json.loads(result.read_text())["snn_accuracy"]
    assert accuracy["standard"] == accuracy["streaming"] == accuracy["chunked"] \
        == accuracy["onnx-snn"]
    saved = {fmt: onnx.load(tmp_path / f"{fmt}.onnx") for fmt in FORMATS}
    assert saved["standard"] == to_standard(saved["onnx-snn"])
    assert saved["streaming"] == to_streaming(saved["onnx-snn"])
    with pytest.raises(SystemExit) as exited:
        main(["convert", str(tmp_path / "ann.onnx"), "--calib", str(tmp_path / "calib.npz"),
              "--format", "nope", "-o", str(tmp_path / "o.onnx")])
    assert exited.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
