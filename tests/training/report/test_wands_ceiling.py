"""The wands_ceiling part's stacking (training/report/wands_ceiling.py) on made-up class scores."""

from __future__ import annotations

import numpy as np

from training.report.context import DEFAULT_PARTS, PARTS
from training.report.wands_ceiling import stacks


def _scores(gold: np.ndarray, right: np.ndarray, labels: int, seed: int) -> np.ndarray:
    """Random scores whose best label is the gold one exactly where `right` is set."""
    s = np.random.default_rng(seed).random((len(gold), labels))
    wrong = (gold + 1) % labels
    s[np.arange(len(gold)), np.where(right, gold, wrong)] = 2.0
    return s


def test_the_dev_choice_and_the_test_ceiling_differ_when_the_splits_disagree() -> None:
    labels, n = 5, 40
    rng = np.random.default_rng(0)
    gold = {"dev": rng.integers(0, labels, n), "test": rng.integers(0, labels, n)}
    half = np.arange(n) < n // 2
    # "a" is right on all of dev and half of test; "b" on half of dev and all of test.
    signals = {
        "a": {
            "dev": _scores(gold["dev"], np.ones(n, bool), labels, 1),
            "test": _scores(gold["test"], half, labels, 2),
        },
        "b": {
            "dev": _scores(gold["dev"], half, labels, 3),
            "test": _scores(gold["test"], np.ones(n, bool), labels, 4),
        },
    }
    out = stacks(signals, gold, weights=(0.0, 1.0))
    assert out["stacks_tried"] == 3
    chosen, ceiling = out["chosen_on_dev"], out["ceiling_on_test"]
    assert chosen["weights"] == {"a": 1.0, "b": 0.0} and chosen["dev"]["mean"] == 1.0
    assert chosen["test"]["mean"] == 0.5
    assert ceiling["weights"] == {"a": 0.0, "b": 1.0} and ceiling["test"]["mean"] == 1.0
    assert ceiling["test"]["mean"] >= chosen["test"]["mean"]


def test_queries_of_no_known_class_are_not_counted() -> None:
    gold = {"dev": np.array([0, -1, 1]), "test": np.array([-1, 1, 0])}
    scores = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    out = stacks({"only": {"dev": scores, "test": scores}}, gold, weights=(1.0,))
    assert out["chosen_on_dev"]["dev"]["n"] == 2 and out["chosen_on_dev"]["dev"]["mean"] == 1.0
    assert out["chosen_on_dev"]["test"]["mean"] == 0.5


def test_the_ceiling_part_runs_only_when_named() -> None:
    assert "wands_ceiling" in PARTS and "wands_ceiling" not in DEFAULT_PARTS
