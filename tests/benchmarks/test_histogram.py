"""The HDR-style histogram: quantiles within its 1% precision, merging, and a JSON round trip."""

from __future__ import annotations

import numpy as np

from benchmarks.histogram import LatencyHistogram


def test_quantiles_are_within_one_percent_and_never_below_the_truth() -> None:
    values = np.random.default_rng(0).lognormal(mean=-7, sigma=1.0, size=20_000)  # ~1 ms, long tail
    hist = LatencyHistogram()
    hist.record(values)
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert exact <= hist.quantile(q) <= exact * 1.0101
    assert hist.max_s == values.max() and hist.count == values.size


def test_merged_histograms_equal_one_histogram_of_everything() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.exponential(0.002, 5000), rng.exponential(0.02, 500)
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    whole.record(np.concatenate([a, b]))
    left.record(a)
    right.record(b)
    left.merge(right)
    assert np.array_equal(left.counts, whole.counts)
    assert left.summary_ms() == whole.summary_ms()


def test_json_round_trip_and_cdf() -> None:
    hist = LatencyHistogram()
    hist.record([0.001, 0.002, 0.002, 0.5])
    back = LatencyHistogram.from_json(hist.to_json())
    assert back.summary_ms() == hist.summary_ms()
    x, y = back.cdf_ms()
    assert y[-1] == 1.0 and np.all(np.diff(x) > 0) and x[0] >= 1.0
