"""``--preset auto``: try method combinations on the calibration data and keep the one
whose SNN follows the ANN best at the target T.

The candidates (``candidates``) are the classic conversion (the ``spikingjelly``
preset) and, each with neurons starting half-way to the threshold, per-channel
99.9 % and 99.99 % scales and threshold balancing for the target T, each with every
MaxPool policy when the model has a MaxPool. Settings the user gave stay fixed:
a given hook factory, neuron factory or MaxPool policy is not searched. Each
candidate is converted (calibrations are shared where the hook and the ANN graph
are the same) and scored by ``onnx_snn.measure.agreement.ann_agreement`` on the
first ``SEARCH_SAMPLES`` calibration samples: agreement with the ANN's
predictions at the target T first, then the smaller output error; ties go to the
earlier candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from onnx_snn.calibration.collectors import CollectorFactory
from onnx_snn.calibration.factories import BalancingHookFactory, HookFactory
from onnx_snn.config import PRESETS, ConversionConfig
from onnx_snn.graph.pooling import MAXPOOL_POLICIES
from onnx_snn.measure.agreement import Agreement
from onnx_snn.snn.neurons import NeuronFactory

Converted = TypeVar("Converted")
#: Calibration samples each candidate is scored on.
SEARCH_SAMPLES = 512
#: The MaxPool policies the search tries (not "avg", which changes the ANN).
SEARCHED_MAXPOOL = tuple(policy for policy in MAXPOOL_POLICIES if policy != "avg")


@dataclass(frozen=True)
class Candidate:
    """One combination of methods: a readable name and the config it converts with."""

    name: str
    config: ConversionConfig


@dataclass(frozen=True)
class Trial:
    name: str
    agreement: Agreement


@dataclass(frozen=True)
class SearchResult:
    """What ``--preset auto`` tried, and what it chose."""

    target_timesteps: int
    trials: list[Trial]
    chosen: str

    def summary(self) -> str:
        """One line: the choice and why, and the runner-up."""
        ranked = sorted(self.trials, key=lambda trial: trial.agreement.rank(), reverse=True)
        best = ranked[0].agreement
        line = (f"auto chose {self.chosen}: {best.describe()} with the ANN's "
                f"'{best.output}' at T = {self.target_timesteps} on {best.samples} "
                f"calibration samples, the best of {len(self.trials)}")
        if len(ranked) > 1:
            line += f" (next: {ranked[1].name}, {ranked[1].agreement.describe()})"
        return line

    def to_dict(self) -> dict:
        return {"target_timesteps": self.target_timesteps, "chosen": self.chosen,
                "trials": [{"name": trial.name, "agreement": trial.agreement.agreement,
                            "error": trial.agreement.error} for trial in self.trials]}


def candidates(base: ConversionConfig, target_timesteps: int, fixed: Collection[str],
               has_maxpool: bool) -> list[Candidate]:
    """The combinations to try, as configs made from ``base``; ``fixed`` names the
    settings (``hook_factory``, ``neuron_factory``, ``maxpool``) the user gave."""
    given_neurons = base.neuron_factory if "neuron_factory" in fixed else None
    neurons = given_neurons or NeuronFactory(v_init=0.5)
    neuron = neurons.make()
    levels = target_timesteps * neuron.max_spikes
    v_init = getattr(neuron, "v_init", 0.0)
    hooks: list[tuple[str, CollectorFactory]] = [
        ("per-channel 99.9%", HookFactory("99.9%", per_channel=True)),
        ("per-channel 99.99%", HookFactory("99.99%", per_channel=True)),
        (f"threshold balancing for {levels} levels",
         BalancingHookFactory(timesteps=levels, v_init=v_init)),
    ]
    if "hook_factory" in fixed:
        hooks = [("the given hook factory", base.hook_factory)]
    pools = [base.maxpool] if "maxpool" in fixed or not has_maxpool else SEARCHED_MAXPOOL
    classic = PRESETS["spikingjelly"]
    found = [Candidate("spikingjelly (max per layer, v_init 0)", base.replace(
        hook_factory=classic.hook_factory, neuron_factory=given_neurons or classic.neuron_factory,
        maxpool=base.maxpool if "maxpool" in fixed else classic.maxpool))] \
        if "hook_factory" not in fixed else []
    for hook_name, hook in hooks:
        for pool in pools:
            name = f"{hook_name}, v_init {v_init:g}"
            found.append(Candidate(name + (f", maxpool {pool}" if has_maxpool else ""),
                                   base.replace(hook_factory=hook, neuron_factory=neurons,
                                                maxpool=pool)))
    return found


def search(found: list[Candidate], target_timesteps: int,
           convert: Callable[[ConversionConfig], Converted],
           score: Callable[[Converted], Agreement]) -> tuple[ConversionConfig, SearchResult]:
    """Convert each candidate with ``convert`` and score the result with ``score``;
    the best candidate's config and the search's record."""
    trials, best = [], None
    for candidate in found:
        agreement = score(convert(candidate.config))
        trials.append(Trial(candidate.name, agreement))
        if best is None or agreement.rank() > best[1].rank():
            best = (candidate, agreement)
    return best[0].config, SearchResult(target_timesteps, trials, best[0].name)
