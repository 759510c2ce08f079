"""A user-defined spiking neuron: leaky integrate-and-fire (LIF).

This example shows the two extension points of ``onnx_snn.snn.neurons``:

1. ``LIFNeuron``, a ``Neuron`` subclass with its own op type (``LIFNode``) in its
   own domain (``my_neurons``) and its own ONNX function body, so the converted
   model runs on plain onnxruntime with nothing registered;
2. ``ThresholdFromScaleFactory``, a ``NeuronFactory`` whose ``create(scale)``
   sets each neuron's threshold to its Relu's calibrated scale.

Per element, with membrane potential ``v`` (0 at t = 0) and decay factor β::

    h = β · v + x_t                  # leak, then charge
    s = 1 if h >= v_threshold else 0 # fire; the boundary counts
    v = h - s · v_threshold          # soft reset (hard_reset = 0)
    v = v_reset if s else h          # hard reset (hard_reset = 1)

With β = 1 this is exactly the built-in IF neuron, and the code says so: the step
is the built-in ``if_step`` applied to the leaked potential, and
``scan_neuron_function`` wraps it into an ONNX function body (a Scan over T).

Run it with ``python examples/custom_neuron.py`` (about 10 s on two cores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnx_snn import Neuron, NeuronFactory, SpikingModel, convert
from onnx_snn.measure.evaluation import ann_accuracy, snn_accuracy
from onnx_snn.ops.dynamics import GraphArithmetic, if_step
from onnx_snn.ops.function_bodies import scan_neuron_function
from onnx_snn.runtime import SpikingSession

LIF_DOMAIN = "my_neurons"
LIF_OP_TYPE = "LIFNode"
TIMESTEPS = (4, 8, 16, 32)
DECAYS = (1.0, 0.99, 0.95)


# --------------------------------------------------------------------------- function body

def lif_step(ops: GraphArithmetic, v: str, x: str, hard_reset: bool) -> tuple[str, str]:
    """One LIF step: leak the potential, then the built-in IF step (charge, fire, reset).

    ``ops`` emits ONNX nodes; ``decay``, ``v_threshold`` and ``v_reset`` are
    tensors in the function's scope.
    """
    return if_step(ops, ops.mul(v, "decay"), x, "v_threshold", "v_reset", hard_reset)


def lif_node_function(opset: int) -> onnx.FunctionProto:
    """``LIFNode(X: float [T*N, ...], T: int64 scalar) -> spikes of X's shape``."""
    kinds = {"v_threshold": "float", "v_reset": "float", "decay": "float", "hard_reset": "int"}
    return scan_neuron_function(LIF_DOMAIN, LIF_OP_TYPE, kinds, lif_step, opset,
                                doc="Leaky integrate-and-fire neuron over [T*N, ...].")


# --------------------------------------------------------------------------- neuron + factory

class LIFNeuron(Neuron):
    """Leaky integrate-and-fire neuron; ``v_reset=None`` is soft (subtractive) reset.

    ``decay`` in (0, 1] multiplies the membrane potential before each step's input.
    """

    op_type = LIF_OP_TYPE
    domain = LIF_DOMAIN

    def __init__(self, v_threshold: float = 1.0, v_reset: float | None = None,
                 decay: float = 0.99) -> None:
        super().__init__(v_threshold, v_reset)
        if not 0.0 < float(decay) <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.decay = float(decay)

    def attributes(self) -> dict[str, Any]:
        return {
            "v_threshold": self.v_threshold,
            "v_reset": 0.0 if self.v_reset is None else self.v_reset,
            "decay": self.decay,
            "hard_reset": int(self.v_reset is not None),
        }

    def function(self, opset: int) -> onnx.FunctionProto:
        return lif_node_function(opset)


class ThresholdFromScaleFactory(NeuronFactory):
    """Sets each neuron's threshold to its Relu's calibrated scale.

    The rewrite then feeds the neuron ``x · θ/s = x`` (gain 1) and multiplies
    its spikes by ``s``, so the network computes the same thing as with θ = 1,
    up to float rounding. ``v_reset`` is given in units of the threshold.
    """

    def create(self, scale: float) -> Neuron:
        v_reset = None if self.v_reset is None else self.v_reset * scale
        return self.make(v_threshold=scale, v_reset=v_reset)


# --------------------------------------------------------------------------- demo

def train_and_export(seed: int = 0, epochs: int = 15) -> dict[str, Any]:
    """Train the digits CNN and export it; returns the ANN and the data splits."""
    import torch

    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export import export_torch

    x_train, y_train, x_test, y_test = load_digits_split(seed=seed)
    network = train_digits_cnn(x_train, y_train, epochs=epochs, seed=seed)
    ann = export_torch(network, torch.from_numpy(x_train[:2]), dynamo=False)
    return {"ann": ann, "x_train": x_train, "y_train": y_train,
            "x_test": x_test, "y_test": y_test}


def mean_outputs(model: onnx.ModelProto, x: np.ndarray, timesteps: int) -> np.ndarray:
    """The SNN's output averaged over ``timesteps`` steps, [N, classes]."""
    return SpikingSession(model).run(x, timesteps).mean


def compare_threshold_from_scale(ann: onnx.ModelProto, default: SpikingModel,
                                 data: dict[str, Any], decay: float,
                                 timesteps: tuple[int, ...]) -> dict[str, Any]:
    """Convert with ``ThresholdFromScaleFactory`` and compare with ``default``
    (the same LIF neurons with threshold 1) on the test split."""
    scaled = convert(ann, data["x_train"], progress=False,
                     neuron_factory=ThresholdFromScaleFactory(LIFNeuron, decay=decay))
    steps = max(timesteps)
    default_mean = mean_outputs(default.model, data["x_test"], steps)
    scaled_mean = mean_outputs(scaled.model, data["x_test"], steps)
    return {
        "decay": decay, "timesteps": steps,
        "thresholds": [layer.neuron.v_threshold for layer in scaled.layers],
        "scales": [layer.scale for layer in scaled.layers],
        "accuracy": snn_accuracy(scaled.model, data["x_test"], data["y_test"], timesteps),
        "max_abs_diff": float(np.abs(scaled_mean - default_mean).max()),
        "output_range": float(np.abs(default_mean).max()),
        "same_predictions": float((scaled_mean.argmax(-1) == default_mean.argmax(-1)).mean()),
    }


def main(decays: tuple[float, ...] = DECAYS, timesteps: tuple[int, ...] = TIMESTEPS,
         echo=print) -> dict[str, Any]:
    """Train, convert with LIF neurons (several decays), evaluate; return the numbers."""
    data = train_and_export()
    ann, x_test, y_test = data["ann"], data["x_test"], data["y_test"]
    results: dict[str, Any] = {"ann_accuracy": ann_accuracy(ann, x_test, y_test),
                               "timesteps": list(timesteps), "lif_accuracy": {}}
    echo(f"ANN accuracy: {results['ann_accuracy']:.4f}")

    for decay in decays:
        factory = NeuronFactory(neuron_type=LIFNeuron, decay=decay)
        snn = convert(ann, data["x_train"], neuron_factory=factory, progress=False)
        accuracy = snn_accuracy(snn.model, x_test, y_test, timesteps)
        results["lif_accuracy"][decay] = accuracy
        echo(f"LIF decay {decay:<5}: " + "  ".join(f"T={t}: {a:.4f}" for t, a in accuracy.items()))

    # The last decay's neurons again, but each threshold is its layer's calibrated scale.
    scaled = results["scaled"] = compare_threshold_from_scale(ann, snn, data, decays[-1],
                                                              timesteps)
    echo(f"threshold = scale (decay {scaled['decay']}, T={scaled['timesteps']}): thresholds "
         + ", ".join(f"{t:.3g}" for t in scaled["thresholds"])
         + f"; max |mean output - default| = {scaled['max_abs_diff']:.2e} "
         f"(outputs up to {scaled['output_range']:.1f}); "
         f"same predictions: {scaled['same_predictions']:.4f}")
    return results


if __name__ == "__main__":
    main()
