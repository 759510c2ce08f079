"""IFNode's optional state: ``IFNode(X, T, V?) -> (S, V_next?)``.

T steps in one call give the same bits as the same steps in chunks, each call fed
the previous call's V_next as its V, in both engines: the native kernel, and the
stateful function body (``if_node_function(opset, with_state=True)``) on plain
onnxruntime. V holds one potential per feature of a step, or one value that every
potential starts at (V_next is then one step's shape). Both engines are held to a
float32 numpy loop written out here (not ``simulate_if``), bit for bit. Without the
library the native cases skip, unless ``ONNX_SNN_REQUIRE_NATIVE=1`` makes that a
failure.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_native import ORACLE_NEURONS, assert_same_bits, oracle, session, special_columns

from onnx_snn.ops.dynamics import simulate_if
from onnx_snn.ops.if_node_model import if_node_model
from onnx_snn.snn.neurons import IFNeuron

STEPS, ROWS, FEATURES = 7, 3, 5
#: (3, 4) and (1, 1, 5) steps a call against all 7 in one.
CHUNKINGS = [(7,), (3, 4), (1, 1, 5)]
NEURONS = [IFNeuron(0.7, v_init=0.5),                                # soft reset
           IFNeuron(0.6, v_reset=-0.3, v_init=0.5),                   # hard reset
           IFNeuron(0.37, max_spikes=4),                              # burst, soft reset
           IFNeuron(0.5, v_reset=0.0, max_spikes=4),                  # burst, hard reset
           IFNeuron(1.0, signed=True),                                # signed
           IFNeuron(0.6, v_reset=-0.3, max_spikes=3, signed=True)]    # signed burst, hard
#: X [T·N, F] (broadcast_input = 0); X [1, N, F] shown at every step, or X [T, N, F] (= 1).
LAYOUTS = ["folded", "broadcast_one", "broadcast_each"]


@pytest.fixture(params=["native", "function"])
def engine(request) -> str | None:
    """The kernel library's path (native), or None: plain onnxruntime runs the function."""
    return request.getfixturevalue("library") if request.param == "native" else None


def loop(x_seq: np.ndarray, neuron: IFNeuron, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spikes [T, ...] and final potentials of ``neuron`` on ``x_seq`` [T, ...], from the
    potentials ``v``: charge, fire, reset, one float32 array operation at a time."""
    f32 = np.float32
    theta = f32(neuron.v_threshold)
    most = f32(neuron.max_spikes)
    least = -most if neuron.signed else f32(0)
    plain = neuron.max_spikes == 1 and not neuron.signed
    v = np.array(v, f32)
    spikes = np.empty(x_seq.shape, f32)
    for t, x in enumerate(np.asarray(x_seq, f32)):
        h = v + x
        if plain:
            s = (h >= theta).astype(f32)
        else:
            s = np.minimum(np.maximum(np.floor(h / theta), least), most)
        if neuron.v_reset is None:
            v = h - s * theta
        else:
            v = np.where(s != 0, f32(neuron.v_reset), h).astype(f32)
        spikes[t] = s
    return spikes, v


def inputs(neuron: IFNeuron, layout: str, rng: np.random.Generator) -> np.ndarray:
    """X per step, [T, N, F] ([1, N, F] for ``broadcast_one``): random values, and
    columns that land on θ exactly, burst, or burst negative."""
    theta = np.float32(neuron.v_threshold)
    x = rng.normal(0.3 * theta, theta, (STEPS, ROWS, FEATURES)).astype(np.float32)
    x[:, :, 0] = theta / np.float32(2)
    x[:, 0, 1] = theta * np.float32(3.5)
    x[:, 1, 1] = theta * np.float32(-2.5)
    return x[:1] if layout == "broadcast_one" else x


def every_step(x: np.ndarray) -> np.ndarray:
    """``inputs`` as [T, N, F], the one step of ``broadcast_one`` repeated."""
    return np.broadcast_to(x, (STEPS, *x.shape[1:]))


def start(neuron: IFNeuron, rng: np.random.Generator) -> np.ndarray:
    """Potentials [N, F] to start from: random, one on θ, one just below it."""
    theta = np.float32(neuron.v_threshold)
    v = rng.normal(0.0, theta, (ROWS, FEATURES)).astype(np.float32)
    v[0, 2], v[1, 2] = theta, np.nextafter(theta, np.float32(0))
    return v


def stateful_model(neuron: IFNeuron, layout: str) -> onnx.ModelProto:
    """One IFNode (X, T, V) -> (S, V_next) with the stateful function body."""
    broadcast = layout != "folded"
    x_dims = ["S", ROWS, FEATURES] if broadcast else ["TN", FEATURES]
    return if_node_model({**neuron.attributes(), "broadcast_input": int(broadcast)}, x_dims,
                         with_state=True)


def any_v(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with V declared without a shape: it may hold one value, e.g. [1, 1]."""
    model.graph.input[2].type.tensor_type.ClearField("shape")
    return model


def uniform_start(neuron: IFNeuron) -> np.float32:
    """v_init·θ in float32: where a node without V starts every potential."""
    return np.float32(neuron.v_init) * np.float32(neuron.v_threshold)


def run_chunks(ifnode: ort.InferenceSession, x: np.ndarray, layout: str,
               chunks: tuple[int, ...], v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spikes [T, N, F] and the last V_next of ``chunks`` calls, from the potentials ``v``;
    each call takes the steps that follow the previous call's, and its V_next."""
    spikes, first = [], 0
    for steps in chunks:
        part = x if layout == "broadcast_one" else x[first:first + steps]
        if layout == "folded":
            part = part.reshape(-1, FEATURES)
        s, v = ifnode.run(None, {"X": part, "T": np.array(steps, np.int64), "V": v})
        assert v.shape == (ROWS, FEATURES)  # [N, F]: V's shape, or one step's for one value
        spikes.append(s.reshape(steps, ROWS, FEATURES))
        first += steps
    return np.concatenate(spikes), v


@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunks_continue_the_run_bit_for_bit(engine, neuron, layout, rng) -> None:
    """7 steps in one call, as 3 + 4 and as 1 + 1 + 5: the same spikes and final
    potentials, and the loop's."""
    x, v0 = inputs(neuron, layout, rng), start(neuron, rng)
    expected_spikes, expected_v = loop(every_step(x), neuron, v0)
    assert 0 < np.abs(expected_spikes).mean() < neuron.max_spikes
    ifnode = session(stateful_model(neuron, layout), engine)
    whole = run_chunks(ifnode, x, layout, CHUNKINGS[0], v0)
    for chunks in CHUNKINGS:
        spikes, v = run_chunks(ifnode, x, layout, chunks, v0)
        assert v.shape == (ROWS, FEATURES)
        assert_same_bits(spikes, expected_spikes)
        assert_same_bits(v, expected_v)
        assert_same_bits(spikes, whole[0])
        assert_same_bits(v, whole[1])


@pytest.mark.parametrize("neuron", ORACLE_NEURONS, ids=repr)
def test_special_values_chunk_bit_for_bit(engine, neuron, rng) -> None:
    """±inf, NaN, ±0.0, θ and one ulp below it (``special_columns``), 9 steps as 4 + 5
    calls: the scalar oracle's spikes, and the loop's final potentials, NaN signs
    included. onnxruntime's Where returns +0.0 for a -0.0 operand, so after a hard reset
    to v_reset = -0.0 the function body's potentials are +0.0: equal, not the same bits."""
    steps, width = 9, ROWS * FEATURES
    x = special_columns(neuron, steps, width, rng).reshape(steps, ROWS, FEATURES)
    uniform = np.full((ROWS, FEATURES), np.float32(neuron.v_init) * np.float32(neuron.v_threshold))
    with np.errstate(all="ignore"):  # inf - inf and friends: part of what is checked
        expected_v = loop(x, neuron, uniform)[1]
    ifnode = session(stateful_model(neuron, "folded"), engine)
    spikes, v = run_chunks(ifnode, x, "folded", (4, 5), uniform)
    assert_same_bits(spikes, oracle(x, neuron))
    if engine is None and np.signbit(np.float32(neuron.attributes()["v_reset"])):
        np.testing.assert_array_equal(v, expected_v)
    else:
        assert_same_bits(v, expected_v)


@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
def test_simulate_if_continues_from_v_start(neuron, rng) -> None:
    """The numpy reference: ``v_start`` and ``return_potential`` chain as the op's V and
    V_next do, and agree with the loop."""
    x, v0 = inputs(neuron, "folded", rng), start(neuron, rng)
    settings = (neuron.v_threshold, neuron.v_reset, neuron.v_init, neuron.max_spikes,
                neuron.signed)
    expected_spikes, expected_v = loop(x, neuron, v0)
    first, v = simulate_if(x[:3], *settings, v_start=v0, return_potential=True)
    second, v = simulate_if(x[3:], *settings, v_start=v, return_potential=True)
    assert_same_bits(np.concatenate([first, second]), expected_spikes)
    assert_same_bits(v, expected_v)
    uniform = np.full((ROWS, FEATURES), np.float32(neuron.v_init) * np.float32(neuron.v_threshold))
    assert_same_bits(simulate_if(x, *settings), loop(x, neuron, uniform)[0])


def test_simulate_if_refuses_a_v_start_of_another_shape() -> None:
    with pytest.raises(ValueError,
                       match=r"one step's shape \(3, 5\) or hold one value, got \(15,\)"):
        simulate_if(np.zeros((2, 3, 5), np.float32), v_start=np.zeros(15, np.float32))


@pytest.mark.parametrize("neuron", [NEURONS[1], NEURONS[5]], ids=repr)
def test_without_v_the_potentials_start_at_v_init(engine, neuron, rng) -> None:
    """A node without V (the 2-input model) starts from v_init·θ, as before."""
    x = inputs(neuron, "folded", rng)
    uniform = np.full((ROWS, FEATURES), np.float32(neuron.v_init) * np.float32(neuron.v_threshold))
    model = if_node_model(neuron.attributes(), ["TN", FEATURES])
    spikes = session(model, engine).run(None, {"X": x.reshape(-1, FEATURES),
                                               "T": np.array(STEPS, np.int64)})[0]
    assert_same_bits(spikes.reshape(x.shape), loop(x, neuron, uniform)[0])


def without_v(model: onnx.ModelProto, empty_name: bool) -> onnx.ModelProto:
    """``model``'s IFNode without V: left out, or named ""."""
    node = model.graph.node[0]
    if empty_name:
        node.input[2] = ""
    else:
        del node.input[2]
    del model.graph.input[2]
    return model


@pytest.mark.parametrize("empty_name", [False, True], ids=["left-out", "named-empty"])
@pytest.mark.parametrize("layout", ["folded", "broadcast_each"])
def test_the_kernel_gives_v_next_without_v(library, layout, empty_name, rng) -> None:
    """The kernel alone (a function cannot leave V out): V_next from v_init·θ, in one
    step's shape [N, F]."""
    neuron = NEURONS[0]
    x = inputs(neuron, layout, rng)
    uniform = np.full((ROWS, FEATURES), np.float32(neuron.v_init) * np.float32(neuron.v_threshold))
    expected_spikes, expected_v = loop(x, neuron, uniform)
    ifnode = session(without_v(stateful_model(neuron, layout), empty_name), library)
    feed_x = x.reshape(-1, FEATURES) if layout == "folded" else x
    spikes, v = ifnode.run(None, {"X": feed_x, "T": np.array(STEPS, np.int64)})
    assert_same_bits(spikes.reshape(x.shape), expected_spikes)
    assert v.shape == (ROWS, FEATURES)
    assert_same_bits(v, expected_v)


def test_v_next_without_v_needs_whole_steps_in_x(library) -> None:
    """X [2, 6] with T = 4 is 3 values a step but no [N, ...] shape: V_next needs V."""
    model = without_v(if_node_model(IFNeuron().attributes(), ["TN", 6], with_state=True),
                      empty_name=False)
    with pytest.raises(Exception, match="IFNode: V_next needs V here"):
        session(model, library).run(None, {"X": np.zeros((2, 6), np.float32),
                                           "T": np.array(4, np.int64)})


@pytest.mark.parametrize(("rows", "features", "count"), [(ROWS, FEATURES, 2 * FEATURES),
                                                          (1, 1, 3)])
def test_v_with_the_wrong_count_is_an_error(engine, rows, features, count) -> None:
    """V must hold one potential per feature of a step, or one: not 10 where a step has
    15 features, nor 3 where it has one (a V that would broadcast the other way)."""
    model = any_v(if_node_model(IFNeuron().attributes(), ["TN", features], with_state=True))
    feed = {"X": np.zeros((2 * rows, features), np.float32), "T": np.array(2, np.int64),
            "V": np.zeros(count, np.float32)}
    expected = rows * features
    message = (rf"IFNode: V holds {count} potentials, expected {expected}, one per feature "
               r"of a step, or 1" if engine else
               r"IFNode_V_must_hold_one_value_per_feature_or_one.*"
               rf"requested shape:\{{{expected}\}}")
    with pytest.raises(Exception, match=message):
        session(model, engine).run(None, feed)


def test_v_next_takes_the_shape_of_v(engine, rng) -> None:
    """A flat V [N·F] works, and V_next comes back flat too."""
    neuron = NEURONS[2]
    x, v0 = inputs(neuron, "folded", rng), start(neuron, rng)
    model = stateful_model(neuron, "folded")
    for value in (model.graph.input[2], model.graph.output[1]):  # V, V_next: any shape
        value.type.tensor_type.ClearField("shape")
    ifnode = session(model, engine)
    spikes, v = ifnode.run(None, {"X": x.reshape(-1, FEATURES), "T": np.array(STEPS, np.int64),
                                  "V": v0.reshape(-1)})
    expected_spikes, expected_v = loop(x, neuron, v0)
    assert_same_bits(spikes.reshape(x.shape), expected_spikes)
    assert_same_bits(v, expected_v.reshape(-1))


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_the_stateful_function_is_valid(opset) -> None:
    model = if_node_model(IFNeuron().attributes(), ["TN", 4], opset, with_state=True)
    onnx.checker.check_model(model, full_check=True)
    assert list(model.functions[0].input) == ["X", "T", "V"]
    assert list(model.functions[0].output) == ["S", "V_next"]


#: Shapes of a V that holds one value, the start of every potential.
ONE_VALUE_SHAPES = [(1, 1), (1,)]


@pytest.mark.parametrize("v_shape", ONE_VALUE_SHAPES, ids=str)
@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_value_v_chunks_equal_one_call_without_v(engine, neuron, layout, v_shape,
                                                      rng) -> None:
    """V = v_init·θ as one value ([1, 1] or [1]): 7 steps as 3 + 4 calls, the first from
    that V and the second from the first's V_next (one step's shape [N, F]), give the bits
    of one call without V (the stateless node), and the loop's."""
    x = inputs(neuron, layout, rng)
    broadcast = layout != "folded"
    x_dims = ["S", ROWS, FEATURES] if broadcast else ["TN", FEATURES]
    stateless = if_node_model({**neuron.attributes(), "broadcast_input": int(broadcast)}, x_dims)
    whole = session(stateless, engine).run(None, {
        "X": x if broadcast else x.reshape(-1, FEATURES), "T": np.array(STEPS, np.int64)})[0]
    expected_spikes, expected_v = loop(every_step(x), neuron,
                                       np.full((ROWS, FEATURES), uniform_start(neuron)))
    assert_same_bits(whole.reshape(expected_spikes.shape), expected_spikes)
    ifnode = session(any_v(stateful_model(neuron, layout)), engine)
    spikes, v = run_chunks(ifnode, x, layout, (3, 4), np.full(v_shape, uniform_start(neuron)))
    assert_same_bits(spikes, whole.reshape(spikes.shape))
    assert_same_bits(v, expected_v)


@pytest.mark.parametrize("value", [-0.0, 0.3, np.nan, -np.inf], ids=str)
@pytest.mark.parametrize("neuron", [NEURONS[0], NEURONS[3], NEURONS[5]], ids=repr)
@pytest.mark.parametrize("layout", ["folded", "broadcast_one"])
def test_one_value_v_is_that_value_everywhere(engine, neuron, layout, value, rng) -> None:
    """A one-value V [1, 1] gives the bits of a V [N, F] full of that value (-0.0, NaN and
    -inf included), and of the loop from it; V_next is one step's shape either way."""
    x = inputs(neuron, layout, rng)
    full = np.full((ROWS, FEATURES), np.float32(value))
    ifnode = session(any_v(stateful_model(neuron, layout)), engine)
    one = run_chunks(ifnode, x, layout, (7,), full[:1, :1].copy())
    with np.errstate(all="ignore"):  # -inf and NaN potentials: part of what is checked
        expected_spikes, expected_v = loop(every_step(x), neuron, full)
    for spikes, v in (one, run_chunks(ifnode, x, layout, (7,), full)):
        assert_same_bits(spikes, expected_spikes)
        assert_same_bits(v, expected_v)


@pytest.mark.parametrize("v_shape", [(1,), (1, 1), (1, 1, 1)], ids=str)
@pytest.mark.parametrize("broadcast", [False, True], ids=["folded", "broadcast"])
def test_with_one_feature_v_next_takes_the_shape_of_v(engine, broadcast, v_shape,
                                                       rng) -> None:
    """Where a step has one feature (X [T, 1], or [1, 1, 1] broadcast), a one-value V holds
    one per feature as well: V_next comes back in V's shape, whatever its rank."""
    neuron = NEURONS[1]
    x_seq = rng.normal(0.3, 0.6, (STEPS, 1, 1)).astype(np.float32)
    model = if_node_model({**neuron.attributes(), "broadcast_input": int(broadcast)},
                          ["S", 1, 1] if broadcast else ["TN", 1], with_state=True)
    model.graph.output[1].type.tensor_type.ClearField("shape")  # V_next: V's shape
    feed_x = x_seq[:1] if broadcast else x_seq.reshape(STEPS, 1)
    if broadcast:
        x_seq = every_step(x_seq[:1])
    v0 = np.full(v_shape, np.float32(0.25))
    spikes, v = session(any_v(model), engine).run(None, {
        "X": feed_x, "T": np.array(STEPS, np.int64), "V": v0})
    expected_spikes, expected_v = loop(x_seq, neuron, np.full((1, 1), np.float32(0.25)))
    assert_same_bits(spikes.reshape(expected_spikes.shape), expected_spikes)
    assert v.shape == v_shape
    assert_same_bits(v.reshape(1, 1), expected_v)


def test_one_value_v_without_v_next(library, rng) -> None:
    """The kernel alone (a function's outputs are all there): a node with a one-value V and
    no V_next (the stateless loops, started at V's value) gives the spikes of V_next's
    node."""
    neuron = NEURONS[5]
    x = inputs(neuron, "folded", rng)
    v0 = np.full((1, 1), np.float32(-0.2))
    model = any_v(stateful_model(neuron, "folded"))
    feed = {"X": x.reshape(-1, FEATURES), "T": np.array(STEPS, np.int64), "V": v0}
    with_v_next = session(model, library).run(None, feed)[0]
    del model.graph.node[0].output[1]
    del model.graph.output[1]
    (spikes,) = session(model, library).run(None, feed)
    assert_same_bits(spikes, with_v_next)
    expected = loop(x, neuron, np.full((ROWS, FEATURES), v0[0, 0]))[0]
    assert_same_bits(spikes.reshape(expected.shape), expected)


def test_one_value_v_next_needs_whole_steps_in_x(engine) -> None:
    """X [2, 6] with T = 4 is 3 values a step but no [N, ...] shape: V_next of a one-value
    V has no shape to take (a V of 3 values works: ``test_v_next_takes_the_shape_of_v``)."""
    model = any_v(if_node_model(IFNeuron().attributes(), ["TN", 6], with_state=True))
    feed = {"X": np.zeros((2, 6), np.float32), "T": np.array(4, np.int64),
            "V": np.zeros((1, 1), np.float32)}
    message = ("IFNode: V_next needs a V of one value per feature here" if engine else
               "cannot be reshaped")
    with pytest.raises(Exception, match=message):
        session(model, engine).run(None, feed)


@pytest.mark.parametrize("v_start", [np.float32(-0.3), np.full(1, -0.3, np.float32),
                                     np.full((1, 1), -0.3, np.float32)],
                         ids=["scalar", "[1]", "[1,1]"])
def test_simulate_if_spreads_a_one_value_v_start(v_start, rng) -> None:
    """``simulate_if``: a scalar or one-element ``v_start`` starts every potential."""
    neuron = NEURONS[3]
    x = inputs(neuron, "folded", rng)
    settings = (neuron.v_threshold, neuron.v_reset, neuron.v_init, neuron.max_spikes,
                neuron.signed)
    spikes, v = simulate_if(x, *settings, v_start=v_start, return_potential=True)
    expected_spikes, expected_v = loop(x, neuron, np.full((ROWS, FEATURES), np.float32(-0.3)))
    assert_same_bits(spikes, expected_spikes)
    assert_same_bits(v, expected_v)
