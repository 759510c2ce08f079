"""Per-channel histograms of activations that do not depend on how the data is batched,
and the threshold that minimises the error of an IF neuron's rate
(docs/semantics.md, "Post-training improvements").

An IF neuron with soft reset, threshold θ and initial potential ``v_init``·θ, driven
for L steps by a constant input x, fires at the rate
``q_θ(x) = θ·clip(floor(L·x/θ + v_init), 0, L)/L``. ``best_thresholds`` picks, per
channel, the θ that minimises Σ (q_θ(x) − x)² over every value the histogram saw.
"""

from __future__ import annotations

import numpy as np

from onnx_snn.errors import OnnxSnnError

#: Bins per channel (a power of two).
BINS = 2048
#: The range exponent of a channel that has seen no positive value yet.
_EMPTY = -2000
#: Candidate-by-level cells evaluated at once, bounding memory.
_CHUNK = 1 << 20
#: Values counted at once by ``add``, bounding its float64 and index copies.
_BLOCK = 1 << 22


class ChannelHistogram:
    """One histogram per channel of non-negative values: exact zeros counted apart, and
    ``bins`` bins of width R/bins over [0, R), R = 2**e the smallest power of two above
    the channel's maximum so far; each bin keeps its count (int64) and Σx (float64).

    A value's bin is floor(x·bins/R), exact in floating point, and a larger maximum
    doubles R by merging bins in pairs, so counts and ranges are a function of the
    values alone, whatever their batching or order (Σx up to float64 rounding).
    """

    def __init__(self, channels: int, bins: int = BINS) -> None:
        self.bins = bins
        self.counts = np.zeros((channels, bins), np.int64)
        self.sums = np.zeros((channels, bins))
        self.zeros = np.zeros(channels, np.int64)
        self.maximum = np.zeros(channels)
        self.exponent = np.full(channels, _EMPTY)

    def add(self, values: np.ndarray, name: str, axis: int = 1) -> None:
        """Count one batch of ``name``'s values, with channels on ``axis``."""
        channels = self.counts.shape[0]
        rows = np.moveaxis(np.asarray(values), axis, 0).reshape(channels, -1)
        width = max(_BLOCK // channels, 1)
        for start in range(0, rows.shape[1], width):
            self._add_rows(rows[:, start:start + width].astype(np.float64), name)

    def _add_rows(self, rows: np.ndarray, name: str) -> None:
        """Count ``rows`` [channels, values] of ``name``."""
        channels = self.counts.shape[0]
        if rows.size == 0:
            return
        top = rows.max(axis=1)
        if not (np.isfinite(top).all() and rows.min() >= 0):
            raise OnnxSnnError(f"'{name}': threshold balancing needs finite values >= 0, got "
                               f"min {rows.min():g}, max {top.max():g}")
        self.maximum = np.maximum(self.maximum, top)
        seen = self.maximum > 0
        exponent = np.where(seen, np.frexp(self.maximum)[1], _EMPTY)
        self._grow(exponent - self.exponent)
        self.exponent = exponent
        scale = np.where(seen, np.ldexp(float(self.bins), -np.where(seen, exponent, 0)
                                        .astype(np.int32)), 0.0)
        index = (rows * scale[:, None]).astype(np.int64)  # floor: a power-of-two scaling
        index += np.arange(channels)[:, None] * self.bins
        size = channels * self.bins
        self.counts += np.bincount(index.ravel(), minlength=size).reshape(channels, self.bins)
        self.sums += np.bincount(index.ravel(), rows.ravel(), size).reshape(channels, self.bins)
        zeros = (rows == 0).sum(axis=1)
        self.counts[:, 0] -= zeros
        self.zeros += zeros

    def _grow(self, shift: np.ndarray) -> None:
        """Merge each channel's bins in groups of 2**shift (its range grew that much)."""
        for step in np.unique(shift[shift > 0]):
            rows = shift == step
            group = 1 << int(min(step, np.log2(self.bins)))
            kept = self.bins // group
            for table in (self.counts, self.sums):
                merged = table[rows].reshape(-1, kept, group).sum(axis=2)
                table[rows] = np.concatenate(
                    [merged, np.zeros((merged.shape[0], self.bins - kept), table.dtype)], axis=1)

    def best_thresholds(self, levels: int, v_init: float) -> np.ndarray:
        """Per channel, the θ minimising Σ (q_θ(x) − x)², ``levels`` = L.

        Candidates are the bin edges j·R/bins, j = 1 .. ceil(max·bins/R): a grid of
        step R/bins (at most max/1024) up to the first edge at or above the max. A bin
        that a level boundary θ·(k − v_init)/L cuts counts wholly on the side of its
        mean (exact when it holds one value, or values on one side); exact zeros sit
        at level floor(v_init). Ties go to the smallest θ; a channel that only saw
        zeros gets 0.
        """
        channels, bins = self.counts.shape
        seen = self.maximum > 0
        width = np.where(seen, np.ldexp(1.0, (self.exponent - int(np.log2(bins)))
                                        .astype(np.int32)), 1.0)
        last = np.where(seen, np.ceil(self.maximum / width), 1).astype(np.int64)
        j = np.arange(1, bins + 1)
        boundary = np.outer(j, np.arange(1, levels + 1) - v_init) / levels  # in bins
        zero_level = min(np.floor(v_init), levels) / levels
        best = np.zeros(channels)
        chunk = max(1, _CHUNK // (bins * (levels + 2)))
        for start in range(0, channels, chunk):
            part = slice(start, min(start + chunk, channels))
            tried = int(last[part].max())  # candidates above every channel's max: none
            n, s = self._level_sums(part, boundary[:tried], width[part])
            theta = j[None, :tried] * width[part, None]
            level = theta[:, :, None] * (np.arange(levels + 1) / levels)
            error = (level * level * n - 2 * level * s).sum(axis=2) \
                + self.zeros[part, None] * (theta * zero_level) ** 2
            error[j[None, :tried] > last[part, None]] = np.inf
            pick = np.argmin(error, axis=1)
            best[part] = np.where(seen[part], theta[np.arange(len(pick)), pick], 0.0)
        return best

    def _level_sums(self, part: slice, boundary: np.ndarray, width: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Count and Σx per level, shaped [channels, candidates, L + 1], for the
        channels ``part`` and the level boundaries ``boundary`` [candidates, L]."""
        counts, sums = self.counts[part], self.sums[part]
        rows = np.arange(counts.shape[0])[:, None, None]
        cut = np.minimum(np.floor(boundary), self.bins - 1).astype(np.int64)
        below = sums[rows, cut] < boundary * width[:, None, None] * counts[rows, cut]
        edges = np.concatenate([np.zeros(cut.shape[:1] + (1,), np.int64)[None].repeat(
            len(counts), 0), cut + below, np.full(below.shape[:2] + (1,), self.bins)], axis=2)
        totals = [np.concatenate([np.zeros((len(counts), 1)), np.cumsum(t, axis=1)], axis=1)
                  for t in (counts, sums)]
        return tuple(np.diff(t[rows, edges], axis=2) for t in totals)
