"""Compare onnx-snn's ``spikingjelly`` preset with SpikingJelly's own ann2snn.

Both convert the same trained digits BN-CNN, calibrated on the training split in
batches of 100 (momentum 0.1); the script prints both sets of scales and compares
the per-step outputs and predictions on the test split.

SpikingJelly 2.0 requires torchvision and torchaudio, which do not import beside
the pinned torch here, but its converter runs without them:

    pip install --no-deps spikingjelly==2.0.0 loguru
    python benchmarks/compare_spikingjelly.py [--mode 99.9%] [--timesteps 32]
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="99.9%", help="max, P%% or a fraction")
    parser.add_argument("--timesteps", type=int, default=32)
    args = parser.parse_args()
    mode = args.mode if args.mode.lower() == "max" or args.mode.endswith("%") \
        else float(args.mode)
    warnings.filterwarnings("ignore")

    import torch
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter
    from spikingjelly.activation_based.ann2snn.modules import VoltageScaler
    from spikingjelly.activation_based.ann2snn.recipes.rate_coding import RateCodingRecipe

    from onnx_snn import HookFactory, convert
    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export.torch import export_torch
    from onnx_snn.runtime import SpikingSession

    x_train, y_train, x_test, y_test = load_digits_split()
    net = train_digits_cnn(x_train, y_train)
    calibration = [torch.from_numpy(x_train[i:i + 100]) for i in range(0, len(x_train), 100)]
    theirs = Converter(RateCodingRecipe(calibration, mode=mode, momentum=0.1)).convert(
        copy.deepcopy(net))
    their_scales = [m.scale.item() for m in theirs.modules()
                    if isinstance(m, VoltageScaler)][1::2]  # (1/s, s) pairs: keep s
    ann = export_torch(net, torch.from_numpy(x_train[:2]), dynamo=False)
    ours = convert(ann, x_train, preset="spikingjelly", hook_factory=HookFactory(mode, 0.1),
                   batch_size=100, progress=False)

    print(f"mode {mode}, momentum 0.1, batches of 100")
    for layer, their in zip(ours.layers, their_scales):
        print(f"  {layer.node:<12} SpikingJelly {their:.9g}  onnx-snn {layer.scale:.9g}  "
              f"relative difference {abs(their - layer.scale) / layer.scale:.1e}")
    steps = args.timesteps
    functional.reset_net(theirs)
    with torch.no_grad():
        their_out = np.stack([theirs(torch.from_numpy(x_test)).numpy() for _ in range(steps)])
    our_out = SpikingSession(ours.model).run(x_test, steps).per_step
    their_pred = np.cumsum(their_out, axis=0).argmax(axis=-1)
    our_pred = np.cumsum(our_out, axis=0).argmax(axis=-1)
    close = np.isclose(their_out, our_out, rtol=1e-4, atol=1e-4 * np.abs(their_out).max())
    print(f"per-step outputs equal to 1e-4: {close.mean():.4%} of values (the rest differ by "
          f"a spike somewhere upstream); identical predictions at every t <= {steps}: "
          f"{np.mean(their_pred == our_pred):.4%}")
    for t in (4, 8, 16, steps):
        print(f"  T={t:>3}: SpikingJelly {np.mean(their_pred[t - 1] == y_test):.4f}  "
              f"onnx-snn {np.mean(our_pred[t - 1] == y_test):.4f}")


if __name__ == "__main__":
    main()
