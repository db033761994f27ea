"""The wands_ceiling part's stacking (training/report/wands_ceiling.py) on made-up class scores."""

from __future__ import annotations

import numpy as np

from training.intent import PROTOTYPE_SCALE
from training.report.context import DEFAULT_PARTS, PARTS
from training.report.wands_ceiling import leave_one_out_shots, stacks


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
    chosen, ceiling = out["chosen"], out["ceiling_on_test"]
    assert chosen["weights"] == {"a": 1.0, "b": 0.0} and chosen["dev"]["mean"] == 1.0
    assert chosen["test"]["mean"] == 0.5
    assert ceiling["weights"] == {"a": 0.0, "b": 1.0} and ceiling["test"]["mean"] == 1.0
    assert ceiling["test"]["mean"] >= chosen["test"]["mean"]


def test_queries_of_no_known_class_are_not_counted() -> None:
    gold = {"dev": np.array([0, -1, 1]), "test": np.array([-1, 1, 0])}
    scores = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    out = stacks({"only": {"dev": scores, "test": scores}}, gold, weights=(1.0,))
    assert out["chosen"]["dev"]["n"] == 2 and out["chosen"]["dev"]["mean"] == 1.0
    assert out["chosen"]["test"]["mean"] == 0.5


def test_the_ceiling_part_runs_only_when_named() -> None:
    assert "wands_ceiling" in PARTS and "wands_ceiling" not in DEFAULT_PARTS


def test_weights_can_be_chosen_on_another_split_than_dev() -> None:
    gold = {"pool": np.array([0, 1]), "test": np.array([1, 0])}
    right = np.array([[2.0, 0.0], [0.0, 2.0]])
    out = stacks({"a": {"pool": right, "test": right}}, gold, weights=(1.0,), choose="pool")
    assert out["chosen"]["pool"]["mean"] == 1.0 and out["chosen"]["test"]["mean"] == 0.0
    assert "dev" not in out["chosen"]


def test_a_query_left_out_is_scored_against_prototypes_built_without_it() -> None:
    prototypes = np.eye(3, dtype=np.float32)
    # Two queries of label 0 pointing at label 1's prototype, one of label 2.
    vecs = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    gold = np.array([0, 0, 2])
    scores = leave_one_out_shots(prototypes, vecs, gold)
    # Query 0 sees label 0 moved halfway toward label 1 by query 1 alone: cosine 1/sqrt(2).
    assert np.isclose(scores[0, 0], PROTOTYPE_SCALE / np.sqrt(2), atol=1e-5)
    assert np.allclose(scores[0], scores[1])
    # The only query of label 2 is left out of its own label: label 2 keeps its prototype.
    assert np.isclose(scores[2, 2], PROTOTYPE_SCALE)
