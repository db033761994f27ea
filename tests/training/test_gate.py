"""The retention gate: a student is refused only when its retention is below min_retention at 95%
confidence, so the decision does not flip with the seed on a small evaluation set."""

from __future__ import annotations

import numpy as np
import pytest

from training.gate import Paired, RetentionError, check_retention, retention_interval


def _paired(student_acc: float, teacher_acc: float, n: int, seed: int = 0) -> Paired:
    rng = np.random.default_rng(seed)
    teacher = (rng.random(n) < teacher_acc).astype(float)
    student = (rng.random(n) < student_acc).astype(float)
    return Paired("top-1 accuracy", student, teacher)


def test_interval_is_paired_and_brackets_the_point() -> None:
    p = Paired("top-1 accuracy", np.array([1, 1, 0, 1, 0, 1.0]), np.array([1, 1, 1, 1, 0, 1.0]))
    m = retention_interval(p)
    assert m["retention"] == pytest.approx(0.8)
    assert m["ci95"][0] <= m["retention"] <= m["ci95"][1]
    assert m["items"] == 6 and m["teacher"] == pytest.approx(5 / 6, abs=1e-4)


def test_one_query_of_noise_on_96_does_not_refuse() -> None:
    # The WANDS case: 96 dev queries, the student one query behind its teacher (retention 0.958).
    teacher = np.array([1.0] * 24 + [0.0] * 72)
    student = teacher.copy()
    student[0] = 0.0
    gate = check_retention({"intent": Paired("top-1 accuracy", student, teacher)}, 0.97, force=False)
    assert gate["measured"]["intent"]["retention"] < 0.97
    assert gate["forced"] is False and "bootstrap" in gate["rule"]


def test_a_clearly_worse_student_stops_the_run_unless_forced() -> None:
    samples = {"intent": _paired(0.9, 0.9, 2000), "relevance": _paired(0.5, 0.9, 2000, seed=1)}
    with pytest.raises(RetentionError, match="relevance"):
        check_retention(samples, 0.97, force=False)
    gate = check_retention(samples, 0.97, force=True)
    assert gate["forced"] is True and set(gate["measured"]) == {"intent", "relevance"}


def test_mismatched_items_are_refused() -> None:
    with pytest.raises(ValueError, match="items"):
        Paired("x", np.ones(3), np.ones(4))
