"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    accuracy,
    bootstrap_ci,
    macro_f1,
    mean_ndcg,
    mrr,
    ndcg_at_k,
    overlap_at_k,
    pearson,
    per_grade_accuracy,
    recall_at_k,
    spearman,
)


def test_accuracy() -> None:
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        accuracy(np.array([1, 2]), np.array([1]))


def test_macro_f1_by_hand() -> None:
    pred = np.array([0, 0, 1, 1, 2])
    gold = np.array([0, 1, 1, 1, 2])
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 2, fp 0, fn 1 -> 4/5; class 2: 1.
    assert macro_f1(pred, gold) == pytest.approx((2 / 3 + 4 / 5 + 1) / 3)


def test_macro_f1_ignores_classes_absent_from_gold() -> None:
    # Class 3 is only predicted: it is a false negative for class 0, not a class of its own.
    assert macro_f1(np.array([0, 3]), np.array([0, 0])) == pytest.approx(2 / 3)


def test_bootstrap_ci_brackets_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.8, gold, (gold + 1) % 3)
    lo, hi = bootstrap_ci(accuracy, pred, gold, n=500, seed=3)
    point = accuracy(pred, gold)
    assert lo < point < hi
    # Binomial standard error is ~0.02, so a 95 % interval is roughly 0.08 wide.
    assert 0.04 < hi - lo < 0.12
    assert bootstrap_ci(accuracy, pred, gold, n=500, seed=3) == (lo, hi)


def test_bootstrap_ci_resamples_rows_jointly() -> None:
    # Identical arrays agree on every row; independent resampling of each would break that.
    x = np.arange(50)
    assert bootstrap_ci(accuracy, x, x, n=200) == (1.0, 1.0)


def test_ndcg_by_hand() -> None:
    scores = np.array([3.0, 2.0, 1.0])
    grades = np.array([0, 2, 1])
    # Ranked gains 0, 3, 1: DCG = 3 / log2(3) + 1 / 2; ideal 3, 1, 0: IDCG = 3 + 1 / log2(3).
    expected = (3 / math.log2(3) + 0.5) / (3 + 1 / math.log2(3))
    assert ndcg_at_k(scores, grades, k=10) == pytest.approx(expected)
    assert expected == pytest.approx(0.659, abs=1e-3)
    assert ndcg_at_k(scores, grades, k=1) == 0.0
    assert ndcg_at_k(-scores, grades, k=10) < ndcg_at_k(np.array([0.0, 5.0, 1.0]), grades, k=10) == 1.0


def test_ndcg_without_relevant_candidates_is_skipped() -> None:
    assert math.isnan(ndcg_at_k(np.array([1.0, 2.0]), np.array([0, 0])))
    groups = [
        (np.array([1.0, 2.0]), np.array([0, 0])),
        (np.array([2.0, 1.0]), np.array([1, 0])),
        (np.array([1.0, 2.0]), np.array([1, 0])),
    ]
    # Only the last two count: 1.0 and (1 / log2(3)) / 1.
    assert mean_ndcg(groups, k=10) == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert math.isnan(mean_ndcg([groups[0]]))


def test_recall_and_mrr_by_hand() -> None:
    ranked = np.array([[5, 3, 9], [1, 2, 3], [7, 8, 9]])
    targets = np.array([3, 1, 4])
    assert mrr(ranked, targets) == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert recall_at_k(ranked, targets, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, targets, 2) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, targets, 3) == pytest.approx(2 / 3)


def test_overlap_at_k_by_hand() -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]])
    b = np.array([[3, 2, 9], [7, 8, 9]])
    assert overlap_at_k(a, b, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert overlap_at_k(a, b, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert overlap_at_k(a, a[:, ::-1], 3) == 1.0


def test_spearman_with_ties_by_hand() -> None:
    # Average ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; Pearson with [1, 2, 3, 4] is 4.5 / sqrt(4.5 * 5).
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(4.5 / math.sqrt(22.5))


def test_spearman_is_rank_based_and_pearson_is_not() -> None:
    x = np.linspace(0, 5, 20)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert pearson(x, np.exp(x)) < 0.95
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert pearson(np.array([1, 2, 3]), np.array([2, 4, 7])) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert math.isnan(pearson(np.array([1, 2, 3]), np.array([4, 4, 4])))


def test_per_grade_accuracy_by_hand() -> None:
    gold = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    assert per_grade_accuracy(pred, gold) == pytest.approx(
        {"irrelevant": 0.5, "partial": 1.0, "exact": 2 / 3}
    )
    absent = per_grade_accuracy(np.array([0, 2]), np.array([0, 2]))
    assert absent["irrelevant"] == 1.0 and absent["exact"] == 1.0 and math.isnan(absent["partial"])
