"""How fast converted models run: every format and backend against the ANN floor.

Models: the digits CNN (trained, as in the demo) and a VGG-style CNN on 3x32x32
input with 6 convolutions of 64, 64, 128, 128, 256, 256 channels (random weights;
``--vgg-widths 32,64,128`` for a narrower one). For T time steps and batch N, each
variant runs one batch and the median wall time is printed:

    native     the onnx-snn model with the native IFNode kernel registered
    function   the same model running the IFNode function body
    standard   the --format standard model (Scan in the main graph, no custom op)
    streaming  the --format streaming model, stepped T times from Python
    ann floor  the ANN alone on a batch of T*N: the same matrix work, no neurons
    spikingjelly  (if installed) SpikingJelly's ann2snn conversion of the same
               torch net, run for T single-step calls on the same input. SpikingJelly
               2.0 needs torchvision and torchaudio, which do not import beside the
               pinned torch; its converter runs without them:
               pip install --no-deps spikingjelly==2.0.0 loguru

It also times the IF op alone on [T*N, F] = [2048, 4096], native against the
function body. onnxruntime and torch use the same number of threads.

    python benchmarks/runtime_speed.py [--timesteps 32] [--batches 1,64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np


def median_ms(run: Callable[[], object], budget_s: float, min_runs: int = 3,
              max_runs: int = 50) -> float:
    """Median wall time of ``run`` in ms, after one warm-up, within about ``budget_s``."""
    run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs
                                     or time.perf_counter() - started < budget_s):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return float(np.median(times)) * 1e3


def vgg_net(widths: tuple[int, ...] = (64, 128, 256)):
    """VGG-style: (conv-relu x2, avgpool) per width, then a classifier. The default
    widths are VGG's own first six convolutions."""
    from torch import nn

    layers, channels = [], 3
    for width in widths:
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.AvgPool2d(2))
    size = 32 // 2 ** len(widths)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, 10)).eval()


def build_models(folder: Path, vgg_widths: tuple[int, ...]) -> dict[str, dict]:
    """The torch nets, their ONNX exports and calibration data, by name."""
    import torch

    from onnx_snn.demo.digits import load_digits_split, train_digits_cnn
    from onnx_snn.export.torch import export_torch

    torch.manual_seed(0)
    x_train, y_train, x_test, _ = load_digits_split()
    digits = train_digits_cnn(x_train, y_train).eval()
    vgg = vgg_net(vgg_widths)
    rng = np.random.default_rng(0)
    vgg_data = rng.normal(0.0, 1.0, (256, 3, 32, 32)).astype(np.float32)
    models = {"digits": {"net": digits, "calib": x_train, "inputs": x_test},
              "vgg": {"net": vgg, "calib": vgg_data[:192], "inputs": vgg_data[192:]}}
    for name, entry in models.items():
        entry["ann"] = folder / f"{name}.onnx"
        export_torch(entry["net"], torch.from_numpy(entry["calib"][:2]), entry["ann"],
                     dynamo=False)
    return models


def snn_variants(entry: dict, steps: int, batch: int, budget_s: float) -> dict[str, float]:
    """Median ms of one batch for every onnx-snn variant and the ANN floor."""
    from onnx_snn import convert
    from onnx_snn.export.formats import export_format
    from onnx_snn.io.metadata import TIMESTEPS
    from onnx_snn.runtime import create_session
    from onnx_snn.runtime.streaming import StreamingSession

    snn = convert(entry["ann"], entry["calib"], progress=False).model
    x = np.ascontiguousarray(entry["inputs"][:batch])
    assert len(x) == batch, f"only {len(x)} inputs for batch {batch}"
    ann = create_session(entry["ann"], native=False)
    ann_feed = {ann.get_inputs()[0].name: np.concatenate([x] * steps)}
    feed = {ann.get_inputs()[0].name: x[None], TIMESTEPS: np.array(steps, np.int64)}
    sessions = {"native": create_session(snn, native=True),
                "function": create_session(snn, native=False),
                "standard": create_session(export_format(snn, "standard"), native=False)}
    times = {"ann floor": median_ms(lambda: ann.run(None, ann_feed), budget_s)}
    for name, session in sessions.items():
        times[name] = median_ms(lambda: session.run(None, feed), budget_s)
    streaming = StreamingSession(export_format(snn, "streaming"), native=True)
    times["streaming"] = median_ms(lambda: streaming.run(x, timesteps=steps), budget_s)
    return times


def spikingjelly_ms(entry: dict, steps: int, batch: int, budget_s: float) -> float | None:
    """SpikingJelly's ann2snn on the same net: T single-step calls, or None if absent."""
    try:
        import torch
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.ann2snn import Converter
        from spikingjelly.activation_based.ann2snn.recipes.rate_coding import RateCodingRecipe
    except ImportError:
        return None
    import copy

    calibration = [torch.from_numpy(entry["calib"][i:i + 100])
                   for i in range(0, len(entry["calib"]), 100)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe = RateCodingRecipe(calibration, mode="max", momentum=0.1)
        net = Converter(recipe).convert(copy.deepcopy(entry["net"])).eval()
    x = torch.from_numpy(np.ascontiguousarray(entry["inputs"][:batch]))

    def simulate() -> None:
        functional.reset_net(net)
        with torch.no_grad():
            total = net(x)
            for _ in range(steps - 1):
                total = total + net(x)

    return median_ms(simulate, budget_s)


def if_op_ms(budget_s: float) -> dict[str, float]:
    """The IF op alone on [2048, 4096], native kernel and function body."""
    from onnx_snn.ops.if_node_model import if_node_model
    from onnx_snn.runtime import create_session
    from onnx_snn.snn.neurons import IFNeuron

    model = if_node_model(IFNeuron().attributes(), ["TN", 4096])
    feed = {"X": np.random.default_rng(0).normal(0.3, 1.0, (2048, 4096)).astype(np.float32),
            "T": np.array(32, np.int64)}
    times = {}
    for name, native in (("native", True), ("function", False)):
        session = create_session(model, native)
        times[name] = median_ms(lambda: session.run(None, feed), budget_s, min_runs=10)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes N")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds of timed runs per measurement (at least 3 runs)")
    parser.add_argument("--models", default="digits,vgg", help="which models to time")
    parser.add_argument("--vgg-widths", default="64,128,256",
                        help="channels of the VGG's three conv pairs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch

    from onnx_snn.ops.native import native_report

    torch.set_num_threads(ort.SessionOptions().intra_op_num_threads or torch.get_num_threads())
    report = native_report()
    print(f"onnxruntime {ort.__version__}, IFNode backend: {report['backend']}, "
          f"torch threads {torch.get_num_threads()}, T = {args.timesteps}")
    results: dict = {"timesteps": args.timesteps, "backend": report["backend"], "models": {}}
    op = if_op_ms(args.budget)
    results["if_op"] = op
    print(f"\nIF op alone [2048, 4096]: native {op['native']:.2f} ms, function "
          f"{op['function']:.2f} ms, function / native = {op['function'] / op['native']:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        models = build_models(Path(folder), tuple(int(w) for w in args.vgg_widths.split(",")))
        for name, entry in models.items():
            if name not in args.models.split(","):
                continue
            for batch in (int(b) for b in args.batches.split(",")):
                times = snn_variants(entry, args.timesteps, batch, args.budget)
                jelly = spikingjelly_ms(entry, args.timesteps, batch, args.budget)
                if jelly is not None:
                    times["spikingjelly"] = jelly
                results["models"][f"{name} N={batch}"] = times
                floor = times["ann floor"]
                print(f"\n{name}, N = {batch}, T = {args.timesteps}")
                print(f"  {'variant':<13} {'median ms':>10} {'x floor':>8} {'x native':>9}")
                for variant, ms in times.items():
                    print(f"  {variant:<13} {ms:>10.2f} {ms / floor:>8.2f} "
                          f"{ms / times['native']:>9.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
