"""Which graph patterns and producers convert, how well they rate-code, how long it takes.

Converts every model of ``tests/pattern_models.py`` (``PATTERNS``, then the
producer cases ``PRODUCERS``: torch exporters, skl2onnx, Keras-style NHWC,
opsets) with Max calibration on its data, runs the SNN for T steps and prints a
markdown table:

    pattern | converted | rate-coding error at T | conversion time (s)

The error is ``max |mean SNN output - expected| / max |expected|`` where
``expected`` is the ANN in onnxruntime (or its reference twin, torch's output,
sklearn's ``predict_proba``). Rows marked † are not expected to converge (MaxPool
kept over spikes; Softmax applied per step).

    python benchmarks/patterns_table.py [--steps 64] [--no-producers]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import onnxruntime as ort  # noqa: E402  (after the sys.path entry)
from pattern_models import PATTERNS, PRODUCERS, convert_case, rate_coding_errors  # noqa: E402

ort.set_default_logger_severity(4)  # failures are reported in the table, not as logs


def _short(error: BaseException, limit: int = 110) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def measure(builder, directory: Path, steps: int) -> tuple[str, str, str, str]:
    """One table row for a case builder."""
    name = builder.__name__
    try:
        case = builder(directory) if builder in PRODUCERS else builder()
    except Exception as error:  # noqa: BLE001 - report and go on: the table covers every case
        return name, f"no (build: {_short(error)})", "-", "-"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            result = convert_case(case)
        except Exception as error:  # noqa: BLE001
            return name, f"no ({_short(error)})", "-", f"{time.perf_counter() - start:.2f}"
        seconds = time.perf_counter() - start
    notes = sorted({str(w.message).splitlines()[0][:60] for w in caught
                    if issubclass(w.category, UserWarning)})
    converted = "yes" + (f" (warns: {'; '.join(notes)})".replace("|", "\\|") if notes else "")
    try:
        (error,), _ = rate_coding_errors(case, result.model, (steps,))
        error_text = f"{error:.4f}" + ("" if case.converges else " †")
    except Exception as failure:  # noqa: BLE001
        error_text = f"run failed: {_short(failure)}"
    return name, converted, error_text, f"{seconds:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="time steps T (default 64)")
    parser.add_argument("--no-producers", action="store_true",
                        help="only the hand-built patterns (no torch/sklearn cases)")
    args = parser.parse_args()
    builders = list(PATTERNS) + ([] if args.no_producers else list(PRODUCERS))
    print(f"| pattern | converted | rate-coding error at T = {args.steps} | "
          f"conversion time (s) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for builder in builders:
            print("| " + " | ".join(measure(builder, Path(scratch), args.steps)) + " |",
                  flush=True)
    print("\n† not expected to converge to the ANN (MaxPool over spikes over-counts; "
          "a per-step Softmax is not the softmax of the mean logits).")


if __name__ == "__main__":
    main()
