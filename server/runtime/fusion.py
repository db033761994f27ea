"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): merges rankings whose scores are not
comparable (BM25 against cosine similarity) using only the ranks. Numpy and the standard library only."""

from __future__ import annotations

import numpy as np


def reciprocal_rank_fusion(
    rankings: list[np.ndarray], k: int, weights: list[float] | None = None, c: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows (int64) and fused scores (float64) of several rankings, each an array of rows best first.

    A row scores sum_i weights[i] / (c + rank_i), rank 1-based, over the rankings it appears in; c = 60 (the
    paper's) damps the gap between the first few ranks so one list cannot dominate. A row repeated within
    one ranking counts once, at its best rank. Ties are broken by the best rank a row reached, then by the
    earlier ranking: symmetric inputs give the same answer on every run and the first ranking wins a draw."""
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if c < 0:
        raise ValueError(f"c must be >= 0, not {c}")
    none = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    if k <= 0:
        return none
    rows_, contributions, firsts = [], [], []
    for i, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        ranking = np.asarray(ranking, dtype=np.int64).reshape(-1)
        # np.unique's index is each row's first, i.e. best, position in this ranking.
        rows, position = np.unique(ranking, return_index=True)
        rows_.append(rows)
        contributions.append(weight / (c + 1.0 + position))
        # Order of first appearance when the rankings are read rank by rank, list by list.
        firsts.append(position * len(rankings) + i)
    if not rows_:
        return none
    rows = np.concatenate(rows_)
    contribution = np.concatenate(contributions)
    first = np.concatenate(firsts)
    if len(rows) == 0:
        return none

    # Sum each row's contributions smallest first: float addition is not associative, so a fixed order
    # makes rows with the same multiset of ranks tie exactly instead of by rounding noise.
    order = np.lexsort((contribution, rows))
    rows, contribution, first = rows[order], contribution[order], first[order]
    starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    fused_rows = rows[starts]
    fused = np.add.reduceat(contribution, starts)
    best_first = np.minimum.reduceat(first, starts)

    top = np.lexsort((best_first, -fused))[:k]  # last key is primary: score descending, then first seen
    return fused_rows[top], fused[top]
