"""Search's three modes over a bundle's two product indexes, written once: the server answers Search with
it and training evaluates (and picks the default mode) with it, so a figure in the manifest is what Search
answers."""

from __future__ import annotations

import numpy as np

from server import tracing
from server.manifest import LexicalComponent
from server.runtime.fusion import reciprocal_rank_fusion
from server.runtime.index import ProductIndex, RowFilter
from server.runtime.lexical import LexicalIndex


def search(
    mode: str,
    index: ProductIndex,
    lexical: LexicalIndex | None,
    fusion: LexicalComponent | None,
    vector: np.ndarray | None,
    text: str | None,
    k: int,
    rows: np.ndarray | RowFilter | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k product rows and scores in `mode`: dense (`vector` in the ANN index, exact over `rows` when a
    category restricts them; a category's RowFilter is searched as ProductIndex.filtered_search does), lexical
    (BM25 of `text`) or hybrid (both, `fusion.depth` deep, fused by weighted reciprocal rank). The caller has
    checked that the bundle serves the mode."""
    with tracing.step("index", mode=mode, k=k, filtered=rows is not None):
        return _search(mode, index, lexical, fusion, vector, text, k, rows)


def _search(
    mode: str,
    index: ProductIndex,
    lexical: LexicalIndex | None,
    fusion: LexicalComponent | None,
    vector: np.ndarray | None,
    text: str | None,
    k: int,
    rows: np.ndarray | RowFilter | None,
) -> tuple[np.ndarray, np.ndarray]:
    if mode == "dense":
        assert vector is not None
        if isinstance(rows, RowFilter):
            return index.filtered_search(vector, k, rows)
        return index.search(vector, k) if rows is None else index.exact_search(vector, rows, k)
    assert lexical is not None and text is not None
    allowed = rows.rows if isinstance(rows, RowFilter) else rows
    if mode == "lexical":
        return lexical.search(text, k, allowed)
    assert fusion is not None and vector is not None
    depth = max(k, fusion.depth)
    dense = _search("dense", index, lexical, fusion, vector, text, min(depth, len(lexical)), rows)[0]
    lists = [dense, lexical.search(text, depth, allowed)[0]]
    return reciprocal_rank_fusion(lists, k, weights=[fusion.dense_weight, 1.0], c=fusion.rrf_k)
