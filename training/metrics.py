"""Quality metrics for the training report: classification, ranking, retrieval and correlation. numpy only, so
the report and the pipeline can import them without pulling in scipy or scikit-learn."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np


def _same_length(*arrays: np.ndarray) -> None:
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"arrays differ in length: {sorted(lengths)}")


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """Fraction of rows where pred equals gold; nan for no rows (no evidence is not 0 %)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    _same_length(pred, gold)
    if len(gold) == 0:
        return float("nan")
    return float(np.mean(pred == gold))


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in gold, so rare intents count as much as common ones.
    Classes only ever predicted (never gold) add to the false positives of nothing: they are ignored."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    _same_length(pred, gold)
    classes = np.unique(gold)
    if len(classes) == 0:
        return float("nan")
    f1 = []
    for c in classes:
        p, g = pred == c, gold == c
        tp = np.sum(p & g)
        # 2tp / (2tp + fp + fn) equals 2PR / (P + R) and needs no guard for P + R = 0 (g has a row).
        f1.append(2 * tp / (2 * tp + np.sum(p & ~g) + np.sum(~p & g)))
    return float(np.mean(f1))


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of metric(*arrays); rows are resampled jointly so pairs stay paired."""
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)
    _same_length(*arrays)
    m = len(arrays[0])
    if m == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(n, dtype=np.float64)
    for i in range(n):
        idx = rng.integers(0, m, size=m)
        values[i] = metric(*(a[idx] for a in arrays))
    # Some resamples can be undefined (e.g. a class missing); they carry no information about the spread.
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _dcg(gains: np.ndarray) -> float:
    return float(np.sum(gains / np.log2(np.arange(2, len(gains) + 2))))


def ndcg_at_k(scores: np.ndarray, grades: np.ndarray, k: int = 10) -> float:
    """NDCG@k of one query's candidates (gain 2**grade - 1, log2 discount). Score ties keep input order.
    nan when no candidate is relevant: every ranking is then equally right, so the query says nothing."""
    scores, grades = np.asarray(scores, dtype=np.float64), np.asarray(grades, dtype=np.float64)
    _same_length(scores, grades)
    gains = 2.0**grades - 1.0
    ideal = _dcg(np.sort(gains)[::-1][:k])
    if ideal <= 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")[:k]
    return _dcg(gains[order]) / ideal


def mean_ndcg(groups: Iterable[tuple[np.ndarray, np.ndarray]], k: int = 10) -> float:
    """Mean NDCG@k over queries, skipping those without a relevant candidate; nan if none is left."""
    values = [ndcg_at_k(s, g, k) for s, g in groups]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _hits(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    ranked, targets = np.asarray(ranked), np.asarray(targets)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be [queries, ids], got shape {ranked.shape}")
    _same_length(ranked, targets)
    return ranked == targets[:, None]


def recall_at_k(ranked: np.ndarray, targets: np.ndarray, k: int = 10) -> float:
    """Fraction of queries whose single target id is among the first k ranked ids."""
    hits = _hits(ranked, targets)
    if len(hits) == 0:
        return float("nan")
    return float(np.mean(hits[:, :k].any(axis=1)))


def mrr(ranked: np.ndarray, targets: np.ndarray) -> float:
    """Mean reciprocal rank of the target; a query whose target is not ranked contributes 0."""
    hits = _hits(ranked, targets)
    if len(hits) == 0:
        return float("nan")
    found = hits.any(axis=1)
    first = hits.argmax(axis=1)
    return float(np.mean(np.where(found, 1.0 / (first + 1), 0.0)))


def overlap_at_k(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over rows of two ranked id lists (how far a student keeps the
    teacher's neighbours, whatever their order)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("overlap_at_k expects two [rows, ids] arrays")
    _same_length(a, b)
    if len(a) == 0:
        return float("nan")
    return float(
        np.mean([len(set(x[:k].tolist()) & set(y[:k].tolist())) / k for x, y in zip(a, b, strict=True)])
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with tied values sharing the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end), 1-based
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; nan when either side is constant (correlation undefined)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    _same_length(a, b)
    if len(a) < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.sum(da * da) * np.sum(db * db))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.sum(da * db) / denom, -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of average ranks, so ties are handled like scipy.stats.spearmanr."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    _same_length(a, b)
    return pearson(_average_ranks(a), _average_ranks(b))


def per_grade_accuracy(
    pred: np.ndarray,
    gold: np.ndarray,
    grades: Sequence[str] = ("irrelevant", "partial", "exact"),
) -> dict[str, float]:
    """Recall of each gold grade (grade i is label i); nan for a grade absent from gold (keys stay fixed)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    _same_length(pred, gold)
    out = {}
    for i, name in enumerate(grades):
        mask = gold == i
        out[name] = float(np.mean(pred[mask] == i)) if mask.any() else float("nan")
    return out
