"""An HDR-style latency histogram: log-spaced buckets of 1% relative width from 1 us to 100 s.

Every value is kept (as a bucket count, not a sample), so the tail is exact to 1% however long the run,
and histograms from several client processes or repeats merge by adding counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LOWEST_S = 1e-6
HIGHEST_S = 100.0
GROWTH = 1.01  # each bucket is 1% wider than the one below: quantiles are exact to within 1%
BUCKETS = math.ceil(math.log(HIGHEST_S / LOWEST_S) / math.log(GROWTH)) + 1


def _index(seconds: np.ndarray) -> np.ndarray:
    clipped = np.clip(seconds, LOWEST_S, HIGHEST_S)
    return np.ceil(np.log(clipped / LOWEST_S) / math.log(GROWTH) - 1e-9).astype(np.int64)


def _upper_edge(index: int | np.ndarray) -> float | np.ndarray:
    return LOWEST_S * GROWTH**index


@dataclass
class LatencyHistogram:
    counts: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, dtype=np.int64))
    total_s: float = 0.0
    max_s: float = 0.0

    def record(self, seconds: float | np.ndarray) -> None:
        values = np.atleast_1d(np.asarray(seconds, dtype=np.float64))
        if values.size == 0:
            return
        np.add.at(self.counts, _index(values), 1)
        self.total_s += float(values.sum())
        self.max_s = max(self.max_s, float(values.max()))

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        self.total_s += other.total_s
        self.max_s = max(self.max_s, other.max_s)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The value at quantile q (0-1), as its bucket's upper edge (never below the true value)."""
        n = self.count
        if n == 0:
            return math.nan
        rank = max(1, math.ceil(q * n))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(float(_upper_edge(index)), self.max_s)

    def summary_ms(self) -> dict[str, float]:
        """p50, p90, p99, p99.9, max and mean in milliseconds."""
        if self.count == 0:
            return {}
        quantiles = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999}
        out = {name: round(self.quantile(q) * 1000, 4) for name, q in quantiles.items()}
        out["max"] = round(self.max_s * 1000, 4)
        out["mean"] = round(self.total_s / self.count * 1000, 4)
        return out

    def cdf_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency in ms, fraction of calls at or below it) for the non-empty buckets."""
        nonzero = np.nonzero(self.counts)[0]
        fraction = np.cumsum(self.counts[nonzero]) / max(self.count, 1)
        return np.asarray(_upper_edge(nonzero)) * 1000, fraction

    def to_json(self) -> dict:
        nonzero = np.nonzero(self.counts)[0]
        return {
            "lowest_s": LOWEST_S,
            "growth": GROWTH,
            "buckets": {int(i): int(self.counts[i]) for i in nonzero},
            "total_s": self.total_s,
            "max_s": self.max_s,
        }

    @classmethod
    def from_json(cls, data: dict) -> LatencyHistogram:
        hist = cls(total_s=data["total_s"], max_s=data["max_s"])
        for index, count in data["buckets"].items():
            hist.counts[int(index)] = count
        return hist
