"""The server's own time breakdown, from its Prometheus endpoint read before and after a run.

Every `sift_*_seconds` histogram's sum and count are differenced, so the breakdown covers exactly the calls
of the run (warm-up included), whatever ran before it.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout: float = 5.0) -> Sample:
    """{(sample name, sorted labels): value} for the _sum and _count of every sift_ histogram."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    out: Sample = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("sift_") or family.type not in ("histogram", "counter"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count", "_total")):
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "code"))
                out[(sample.name, labels)] = out.get((sample.name, labels), 0.0) + sample.value
    return out


def breakdown(before: Sample, after: Sample) -> dict[str, dict[str, float]]:
    """{histogram{labels}: {"calls": n, "mean_ms": m}} for what happened between the two scrapes."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for (name, labels), value in after.items():
        if name.endswith("_total"):
            continue
        delta = value - before.get((name, labels), 0.0)
        base = name.removesuffix("_sum").removesuffix("_count")
        key = base + ("{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else "")
        (sums if name.endswith("_sum") else counts)[key] += delta
    out = {}
    for key, count in sorted(counts.items()):
        if count > 0:
            unit = 1000 if "_seconds" in key else 1
            out[key] = {"calls": int(count), "mean_ms" if unit == 1000 else "mean": sums[key] / count * unit}
    return out


def cache_hit_rate(before: Sample, after: Sample) -> dict[str, float]:
    """Response cache hit rate per cache between two scrapes (empty when the cache is off)."""
    hits: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    for (name, labels), value in after.items():
        if name != "sift_cache_requests_total":
            continue
        label = dict(labels)
        delta = value - before.get((name, labels), 0.0)
        total[label["method"]] += delta
        if label["result"] == "hit":
            hits[label["method"]] += delta
    return {method: round(hits[method] / n, 4) for method, n in total.items() if n}
