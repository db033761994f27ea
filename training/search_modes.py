"""Hybrid Search: the BM25 index over titles that ships in the bundle, and the choice of Search's default
mode (dense, lexical or hybrid) by what measures better on held-out products.

Every mode is evaluated through the served code (server/runtime/search.py over the usearch and BM25
indexes), so the figures are what Search answers. The held-out queries are split by product into
two halves: the default mode is chosen on the first ("dev") and reported on both, so the choice is not
graded on the queries that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from server.manifest import LexicalComponent
from server.runtime.index import ProductIndex
from server.runtime.lexical import LexicalIndex, build_lexical_index, save
from server.runtime.search import search
from training.metrics import bootstrap_ci, recall_at_k

MODES = ("dense", "lexical", "hybrid")


def build_lexical(titles: Sequence[str], out: Path) -> tuple[LexicalIndex, list[str]]:
    """Writes the BM25 files into the bundle directory; returns the opened index and the file names."""
    names = save(out, build_lexical_index(titles))
    return LexicalIndex.open(out, len(titles)), names


DENSE_WEIGHTS = (0.5, 1.0, 2.0)
"""Weights of the dense list in the fusion tried on dev (the lexical list's is 1)."""


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


def _recall_with_ci(top: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    hits = (top == targets[:, None]).any(1).astype(float)
    lo, hi = bootstrap_ci(np.mean, hits)
    return {"recall_at_10": round(recall_at_k(top, targets, 10), 4), "ci95": [round(lo, 4), round(hi, 4)]}


def choose_mode(
    texts: Sequence[str],
    vectors: np.ndarray,
    targets: np.ndarray,
    index: ProductIndex,
    lexical: LexicalIndex,
    names: list[str],
    seed: int,
) -> tuple[LexicalComponent, dict[str, Any]]:
    """Every mode's recall@10 on the dev and test halves of the held-out queries (split by product), and
    the manifest component with the mode that measured best on dev as the default."""
    products = np.unique(targets)
    dev_products = np.random.default_rng(seed).permutation(products)[: len(products) // 2]
    is_dev = np.isin(targets, dev_products)
    result: dict[str, Any] = {"queries_dev": int(is_dev.sum()), "queries_test": int((~is_dev).sum())}
    base = LexicalComponent(
        *names,
        description="BM25 over product titles (k1 1.2, b 0.75), fused with dense hits by reciprocal rank",
    )
    # The hybrid's dense weight first, on dev alone.
    by_weight = {
        w: ranked("hybrid", texts, vectors, index, lexical, replace(base, dense_weight=w))
        for w in DENSE_WEIGHTS
    }
    dev_recall = {w: recall_at_k(top[is_dev], targets[is_dev], 10) for w, top in by_weight.items()}
    weight = max(DENSE_WEIGHTS, key=lambda w: (dev_recall[w], w == 1.0))
    result["hybrid_dense_weight"] = {
        "chosen": weight,
        "dev_recall_at_10": {str(w): round(r, 4) for w, r in dev_recall.items()},
    }
    tops = {mode: ranked(mode, texts, vectors, index, lexical, base) for mode in ("dense", "lexical")}
    tops["hybrid"] = by_weight[weight]
    for mode, top in tops.items():
        result[mode] = {
            "dev": _recall_with_ci(top[is_dev], targets[is_dev]),
            "test": _recall_with_ci(top[~is_dev], targets[~is_dev]),
        }
    # Ties go to the earlier mode in MODES: dense needs no lexical index on the hot path.
    best = max(MODES, key=lambda m: (result[m]["dev"]["recall_at_10"], -MODES.index(m)))
    result["default_mode"] = best
    result["rule"] = "the mode with the best recall@10 on the dev half of the held-out products"
    return replace(base, default_mode=best, dense_weight=weight), result
