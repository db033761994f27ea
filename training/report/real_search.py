"""Two questions the real_queries part asks of the served index with real shopping queries:

- Where does Search's top 10 part from the teacher's: the query vector, or the ANN graph? For the served
  query vectors and the teacher's, at several usearch expansions (ef): recall@10 of the index against
  exact search over the same product vectors, overlap@10 of the two top 10s through the index (what Search
  answers), and the index search's p50; and overlap@10 by exact search on both sides (the query side alone).
- How well does each query model give ScoreRelevance's cosine feature? For a product given by id the
  feature is the query model's vector against the product's title vector (view 0, the teacher's embedding
  of its title), and the relevance teacher leans on the teacher's own (query, title) cosine: Spearman of
  the two over real queries x a fixed sample of products.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from server.bundle import Bundle
from server.runtime.index import ProductIndex
from training.metrics import bootstrap_ci, spearman
from training.report.real_common import K, latency, mean_ci, overlap_per_query, unit

EXPANSIONS = (64, 128, 256)
"""The usearch expansions measured: usearch's own default, Sift's (SEARCH_EXPANSION), and twice Sift's."""
FIXED_PRODUCTS = 100
"""Products sampled once for the relevance-feature comparison (every query is scored against all of them)."""
BLOCK = 65536


def exact_rows(index: ProductIndex, vectors: np.ndarray, k: int = K) -> np.ndarray:
    """Each vector's exact top-k product rows by best view, best first, ties by row (-1 padded), over
    blocks of products so a large catalogue is never held at once."""
    n = len(index) // index.views
    queries = unit(np.asarray(vectors, dtype=np.float32))
    best_rows = np.full((len(queries), 0), -1, dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(start + BLOCK, n))
        views = unit(index.all_views(rows).reshape(-1, index.dim)).reshape(len(rows), index.views, -1)
        scores = np.einsum("nvd,qd->qnv", views, queries).max(axis=2)
        best_rows = np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        # Score descending, then row ascending: a stable sort of rows already in ascending order.
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_rows = np.take_along_axis(best_rows, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out[:, : best_rows.shape[1]] = best_rows
    return out


def searched(index: ProductIndex, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The index's top K rows per vector (-1 padded), the score of each one's first hit, and the seconds
    each search took."""
    k = min(K, len(index) // index.views)
    out = np.full((len(vectors), K), -1, dtype=np.int64)
    first = np.zeros(len(vectors), dtype=np.float32)
    seconds = []
    for i, v in enumerate(vectors):
        v = np.ascontiguousarray(v, dtype=np.float32)
        start = time.perf_counter()
        rows, scores = index.search(v, k)
        seconds.append(time.perf_counter() - start)
        out[i, : len(rows)] = rows
        first[i] = scores[0] if len(scores) else 0.0
    return out, first, seconds


def expansion_sweep(
    index: ProductIndex,
    served: np.ndarray,
    teacher: np.ndarray,
    expansions: tuple[int, ...] = EXPANSIONS,
    fp32: np.ndarray | None = None,
) -> dict[str, Any]:
    """Recall@10 against exact search and overlap@10 with the teacher's top 10 at each expansion, the
    index search's latency, and overlap@10 by exact search on both sides (also for `fp32`, the served
    student's vectors before int8, when given); the index's own expansion is restored after."""
    exact_served, exact_teacher = exact_rows(index, served), exact_rows(index, teacher)
    served_at = index.expansion
    rows = []
    try:
        for ef in expansions:
            index.expansion = ef
            top, _, seconds = searched(index, served)
            teacher_top, _, _ = searched(index, teacher)
            rows.append(
                {
                    "expansion": ef,
                    "served_recall_at_10": mean_ci(overlap_per_query(top, exact_served)),
                    "teacher_recall_at_10": mean_ci(overlap_per_query(teacher_top, exact_teacher)),
                    "overlap_at_10": mean_ci(overlap_per_query(top, teacher_top)),
                    "search": latency(np.array(seconds)),
                }
            )
    finally:
        index.expansion = served_at
    out = {
        "served_expansion": served_at,
        "exact_overlap_at_10": mean_ci(overlap_per_query(exact_served, exact_teacher)),
        "rows": rows,
    }
    if fp32 is not None:
        out["fp32_exact_overlap_at_10"] = mean_ci(overlap_per_query(exact_rows(index, fp32), exact_teacher))
    return out


def relevance_cosine(
    index: ProductIndex, teacher: np.ndarray, models: dict[str, np.ndarray], seed: int = 0
) -> dict[str, Any]:
    """Pooled Spearman, with a 95% bootstrap interval over queries, of each query model's cosine to a fixed
    sample of products' title vectors against the teacher's cosine to the same vectors."""
    n = len(index) // index.views
    products = np.sort(np.random.default_rng(seed).choice(n, min(FIXED_PRODUCTS, n), replace=False))
    titles = unit(index.vectors(products))
    target = unit(teacher) @ titles.T
    out: dict[str, Any] = {"products": len(products), "queries": len(teacher), "rows": []}
    for name, vectors in models.items():
        cosine = unit(vectors) @ titles.T

        def pooled(sample: np.ndarray, cosine: np.ndarray = cosine) -> float:
            return spearman(cosine[sample].ravel(), target[sample].ravel())

        lo, hi = bootstrap_ci(pooled, np.arange(len(teacher)), n=200, seed=seed)
        per_query = [spearman(a, b) for a, b in zip(cosine, target, strict=True)]
        out["rows"].append(
            {
                "model": name,
                "spearman_pooled": round(pooled(np.arange(len(teacher))), 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "spearman_mean_per_query": round(float(np.nanmean(per_query)), 4),
            }
        )
    return out


RELEVANCE_QUERY_MODELS = {
    "query_encoder": "hashed n-gram query encoder",
    "query_static": "static word-piece model",
}
"""The names, in the relevance-cosine table, of the query models beside the served one (manifest keys)."""


def index_questions(
    bundle: Bundle,
    served: np.ndarray,
    teacher: np.ndarray,
    served_name: str,
    others: dict[str, np.ndarray | None],
    fp32: np.ndarray | None = None,
) -> dict[str, Any]:
    """Both questions for the real_queries part. `others` holds the vectors of the bundle's other query
    models by manifest key (the hashed encoder beside a transformer student, the static word-piece model);
    the one the bundle's relevance model names (`components.relevance.query_vector`) is marked as
    ScoreRelevance's. `fp32` is the student's vectors before int8, when its export was measured."""
    assert bundle.index is not None
    models = {served_name: served}
    for key, vectors in others.items():
        if vectors is not None:
            mark = " (ScoreRelevance's)" if key == bundle.relevance_query_vector else ""
            models[RELEVANCE_QUERY_MODELS[key] + mark] = vectors
    return {
        "expansions": expansion_sweep(bundle.index, served, teacher, fp32=fp32),
        "relevance_cosine": relevance_cosine(bundle.index, teacher, models),
    }
