"""Reciprocal rank fusion: a worked example, weights, ties, duplicates and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from server.runtime.fusion import reciprocal_rank_fusion


def test_hand_example() -> None:
    dense = np.array([10, 20, 30])
    lexical = np.array([30, 40, 10])
    rows, scores = reciprocal_rank_fusion([dense, lexical], 4)
    # 10: 1/61 + 1/63, 30: 1/63 + 1/61 (tied: 10 reached rank 1 in the first list), 20: 1/62, 40: 1/62
    # (tied: both best at rank 2, 20 in the earlier list).
    assert rows.tolist() == [10, 30, 20, 40]
    np.testing.assert_allclose(scores, [1 / 61 + 1 / 63, 1 / 61 + 1 / 63, 1 / 62, 1 / 62])
    assert scores[0] == scores[1]  # an exact tie, not one broken by rounding
    assert rows.dtype == np.int64


def test_k_truncates_and_c_shapes_the_scores() -> None:
    rows, scores = reciprocal_rank_fusion([np.array([5, 6, 7])], 2, c=0)
    assert rows.tolist() == [5, 6]
    np.testing.assert_allclose(scores, [1.0, 0.5])


def test_weights_favour_a_ranking() -> None:
    a, b = np.array([1, 2]), np.array([2, 1])
    assert reciprocal_rank_fusion([a, b], 2)[0].tolist() == [1, 2]  # a tie: the first ranking wins
    assert reciprocal_rank_fusion([a, b], 2, weights=[1.0, 2.0])[0].tolist() == [2, 1]
    with pytest.raises(ValueError, match="1 weights for 2 rankings"):
        reciprocal_rank_fusion([a, b], 2, weights=[1.0])


def test_exact_ties_with_three_rankings() -> None:
    # Rows 1, 2 and 3 each hold ranks 1, 2 and 3 once: equal sums, whatever the order of addition.
    lists = [np.array([1, 2, 3]), np.array([2, 3, 1]), np.array([3, 1, 2])]
    rows, scores = reciprocal_rank_fusion(lists, 3)
    assert rows.tolist() == [1, 2, 3]
    assert scores[0] == scores[1] == scores[2]


def test_a_row_repeated_in_one_ranking_counts_once() -> None:
    rows, scores = reciprocal_rank_fusion([np.array([4, 4, 9])], 5)
    assert rows.tolist() == [4, 9]
    np.testing.assert_allclose(scores, [1 / 61, 1 / 63])


def test_empty_inputs() -> None:
    assert len(reciprocal_rank_fusion([], 3)[0]) == 0
    assert len(reciprocal_rank_fusion([np.zeros(0, dtype=np.int64)], 3)[0]) == 0
    assert len(reciprocal_rank_fusion([np.array([1, 2])], 0)[0]) == 0


def test_agrees_with_a_dictionary_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        lists = [
            rng.choice(50, int(rng.integers(0, 30)), replace=False) for _ in range(int(rng.integers(1, 4)))
        ]
        weights = rng.uniform(0.5, 2.0, len(lists)).tolist()
        fused: dict[int, float] = {}
        for ranking, w in zip(lists, weights, strict=True):
            for rank, row in enumerate(ranking.tolist(), start=1):
                fused[row] = fused.get(row, 0.0) + w / (60 + rank)
        rows, scores = reciprocal_rank_fusion(lists, 10, weights)
        np.testing.assert_allclose(scores, [fused[r] for r in rows.tolist()])
        assert np.all(np.diff(scores) <= 1e-15)
        assert sorted(fused.values(), reverse=True)[: len(rows)] == pytest.approx(scores.tolist())
