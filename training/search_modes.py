"""Hybrid Search: the BM25 index over titles that ships in the bundle, and the choice of Search's default
mode (dense, lexical or hybrid) by what measures better on held-out products.

Every mode is evaluated through the served code (server/runtime/search.py over the usearch and BM25
indexes), so the figures are what Search answers. The held-out queries are split by product into
two halves: the default mode is chosen on the first ("dev") and reported on both, so the choice is not
graded on the queries that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from server.manifest import LexicalComponent
from server.runtime.index import ProductIndex
from server.runtime.lexical import LexicalIndex, build_lexical_index, file_names, save
from server.runtime.search import search
from training.metrics import bootstrap_ci

MODES = ("dense", "lexical", "hybrid")


def build_lexical(titles: Sequence[str], out: Path) -> tuple[LexicalIndex, list[str]]:
    """Writes the BM25 files into the bundle directory; returns the opened index (as the server opens it)
    and the four file names the manifest's component lists (the impact order is found by its name)."""
    save(out, build_lexical_index(titles))
    return LexicalIndex.open(out, len(titles), impact=True), list(file_names("lexical"))


DENSE_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
"""Weights of the dense list in the fusion tried on dev (the lexical list's is 1)."""
DEPTHS = (10, 30, 100)
"""How deep each list is read before fusing, tried on dev; a shallower read is cheaper, so it wins ties."""


def ranked(
    mode: str,
    texts: Sequence[str],
    vectors: np.ndarray,
    index: ProductIndex,
    lexical: LexicalIndex,
    fusion: LexicalComponent,
    k: int = 10,
) -> np.ndarray:
    """[queries, k] product rows as Search ranks them in `mode` (-1 pads a short list)."""
    out = np.full((len(texts), k), -1, dtype=np.int64)
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        rows = search(mode, index, lexical, fusion, vector, text, k)[0]
        out[i, : len(rows)] = rows
    return out


@dataclass(frozen=True)
class SimilarProducts:
    """Similar-product search on the held-out products: each one's whole title is a query (served `vectors`),
    and a hit counts when it is in the query product's category; the product itself is skipped. Title
    substrings favour BM25 (every query word is in the title); whole titles with their category as the
    answer ask what a shopper's query asks, "more like this", so the default mode is chosen on both."""

    texts: list[str]
    vectors: np.ndarray
    rows: np.ndarray
    categories: np.ndarray
    """Category of every product row of the catalogue."""


def _with_ci(name: str, values: np.ndarray) -> dict[str, Any]:
    lo, hi = bootstrap_ci(np.mean, values)
    return {name: round(float(values.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}


def _similar_precision(
    mode: str, similar: SimilarProducts, index: ProductIndex, lexical: LexicalIndex, fusion: LexicalComponent
) -> np.ndarray:
    """Per query, the share of its top 10 (itself skipped) in its own category."""
    top = ranked(mode, similar.texts, similar.vectors, index, lexical, fusion, k=11)
    out = np.zeros(len(top))
    for i, (row, hits) in enumerate(zip(similar.rows, top, strict=True)):
        hits = hits[(hits >= 0) & (hits != row)][:10]
        out[i] = (similar.categories[hits] == similar.categories[row]).sum() / 10
    return out


def choose_mode(
    texts: Sequence[str],
    vectors: np.ndarray,
    targets: np.ndarray,
    similar: SimilarProducts,
    index: ProductIndex,
    lexical: LexicalIndex,
    names: list[str],
    seed: int,
) -> tuple[LexicalComponent, dict[str, Any]]:
    """Every mode on the dev and test halves of the held-out products (split by product): recall@10 of the
    product from its title substrings, precision@10 of similar-product search from its whole title; the
    manifest component's default is the mode, and the hybrid's dense weight and depth the ones, with the
    best mean of the two on dev."""
    products = np.unique(targets)
    dev_products = np.random.default_rng(seed).permutation(products)[: len(products) // 2]
    is_dev = np.isin(targets, dev_products)
    similar_dev = np.isin(similar.rows, dev_products)
    result: dict[str, Any] = {
        "queries_dev": int(is_dev.sum()),
        "queries_test": int((~is_dev).sum()),
        "similar_dev": int(similar_dev.sum()),
        "similar_test": int((~similar_dev).sum()),
    }
    base = LexicalComponent(
        *names,
        description="BM25 over product titles (k1 1.2, b 0.75), fused with dense hits by reciprocal rank",
    )

    def measure(mode: str, fusion: LexicalComponent) -> dict[str, Any]:
        hits = (ranked(mode, texts, vectors, index, lexical, fusion) == targets[:, None]).any(1).astype(float)
        precision = _similar_precision(mode, similar, index, lexical, fusion)
        out: dict[str, Any] = {}
        for half, substrings, whole in (("dev", is_dev, similar_dev), ("test", ~is_dev, ~similar_dev)):
            out[half] = _with_ci("recall_at_10", hits[substrings]) | {
                "similar_precision_at_10": _with_ci("precision_at_10", precision[whole])
            }
            mean_precision = out[half]["similar_precision_at_10"]["precision_at_10"]
            out[half]["score"] = round((out[half]["recall_at_10"] + mean_precision) / 2, 4)
        return out

    # The hybrid's dense weight and depth first, on dev alone; ties go to the shallower, then to weight 1.
    grid = {
        (w, d): measure("hybrid", replace(base, dense_weight=w, depth=d))
        for w in DENSE_WEIGHTS
        for d in DEPTHS
    }
    weight, depth = max(grid, key=lambda wd: (grid[wd]["dev"]["score"], -wd[1], wd[0] == 1.0))
    result["hybrid_fusion"] = {
        "dense_weight": weight,
        "depth": depth,
        "dev_score": {f"weight {w}, depth {d}": m["dev"]["score"] for (w, d), m in grid.items()},
    }
    result |= {mode: measure(mode, base) for mode in ("dense", "lexical")}
    result["hybrid"] = grid[weight, depth]
    # Ties go to the earlier mode in MODES: dense needs no lexical index on the hot path.
    best = max(MODES, key=lambda m: (result[m]["dev"]["score"], -MODES.index(m)))
    result["default_mode"] = best
    result["rule"] = (
        "the mode with the best dev score, the mean of recall@10 of the held-out product from its title "
        "substrings and precision@10 (own category) of similar-product search from its whole title"
    )
    return replace(base, default_mode=best, dense_weight=weight, depth=depth), result
