"""The report's relevance figures: the AUC it computes and the tables it writes (no data needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from server.rules import GRADES
from training.relevance import Pairs
from training.relevance_stack import StackedTeacher
from training.report.catalogue import relevance_teachers, roc_auc, score_agreement
from training.report.markdown import _relevance_agreement, _relevance_teachers


def test_roc_auc() -> None:
    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5  # ties count half
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), positive) == 0.75
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_agreement_tables() -> None:
    block = {
        "queries": 3,
        "pairs": 60,
        "teacher_grade_shares": [0.9, 0.08, 0.02],
        "students": {
            "shipped": {
                "kind": "text_mlp",
                "spearman_pooled": 0.81,
                "spearman_pooled_ci": [0.78, 0.84],
                "spearman_mean_per_query": 0.7,
                "grade_agreement": 0.95,
            }
        },
    }
    text = "\n".join(_relevance_agreement({"fixed": block}))
    assert "| shipped | text_mlp | 0.810 | 0.780-0.840 | 0.700 | 0.950 |" in text
    assert "3 real queries against a fixed set of 20 catalogue products" in text
    # Results written before the text student keep rendering as they did.
    old = {
        "queries": 3,
        "candidates_per_query": 20,
        "spearman_pooled": 0.256,
        "spearman_mean_per_query": 0.19,
        "grade_agreement": 0.96,
    }
    assert "Spearman of student and cross-encoder scores 0.256 pooled" in "\n".join(_relevance_agreement(old))


def test_agreement_pools_pairs_and_keeps_the_unseen_queries_apart() -> None:
    teacher = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    groups = [np.arange(0, 3), np.arange(3, 6)]
    unseen = np.array([False, True])
    # Right within each query but the second query's scores sit below the first's: pooled Spearman pays
    # for it, the mean per query does not.
    scores = np.array([0.4, 0.5, 0.6, 0.1, 0.2, 0.3])
    a = score_agreement(
        scores, teacher, groups, unseen, seed=0, same_grade=np.array([1, 1, 1, 0, 0, 1], bool)
    )
    assert a["spearman_mean_per_query"] == 1.0
    assert a["spearman_pooled"] == round(float(np.corrcoef([4, 5, 6, 1, 2, 3], [1, 2, 3, 4, 5, 6])[0, 1]), 4)
    assert a["grade_agreement"] == round(4 / 6, 4)
    assert a["unseen_spearman_pooled"] == 1.0 and a["unseen_grade_agreement"] == round(1 / 3, 4)
    lo, hi = a["spearman_pooled_ci"]
    assert lo <= a["spearman_pooled"] <= hi
    # A signal has no grades: no agreement key, and the reversed order is -1.
    b = score_agreement(-teacher, teacher, groups, unseen, seed=0)
    assert b["spearman_pooled"] == -1.0 and "grade_agreement" not in b


def test_agreement_table_shows_the_single_signals() -> None:
    row = {"spearman_pooled": 0.52, "spearman_pooled_ci": [0.5, 0.55], "spearman_mean_per_query": 0.4}
    block = {
        "queries": 3,
        "pairs": 60,
        "teacher_grade_shares": [0.9, 0.08, 0.02],
        "students": {"shipped": {"kind": "text_mlp", **row, "grade_agreement": 0.95}},
        "signals": {"teacher part: MiniLM cosine": row},
    }
    text = "\n".join(_relevance_agreement({"fixed": block}))
    assert "| signal | Spearman (pooled) | 95% CI | mean per query |" in text
    assert "| teacher part: MiniLM cosine | 0.520 | 0.500-0.550 | 0.400 |" in text


def _stacked_rel(rng: np.random.Generator) -> SimpleNamespace:
    """A relevance result with a stacked teacher over a fake cross-encoder and one fake bi-encoder whose
    cosine carries the grade: no model is loaded."""
    words = ["oak", "rug", "lamp", "sofa", "desk", "vase"]

    def pairs(n: int) -> Pairs:
        queries = [str(rng.choice(words)) for _ in range(n // 5)]
        group = np.repeat(np.arange(len(queries)), 5)
        same = rng.random(len(group)) < 0.4
        titles = [queries[g] if s else "zzz" for g, s in zip(group, same, strict=True)]
        return Pairs(queries, group, np.arange(len(group)), titles, same.astype(np.int64) * 2)

    def noisy_ce(qs: list[str], ts: list[str]) -> np.ndarray:
        return rng.dirichlet(np.ones(3), size=len(qs)).astype(np.float32)

    class Bag:
        def encode(self, texts: list[str], batch_size: int = 256, desc: str = "") -> np.ndarray:
            out = np.array([[t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], np.float32)
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    stack = StackedTeacher(noisy_ce, {"minilm": Bag()})
    dev, ev = pairs(400), pairs(200)
    parts = {
        name: stack.parts([p.queries[g] for g in p.group], p.titles)
        for name, p in (("dev", dev), ("eval", ev))
    }
    stack.fit(parts["dev"], dev.grades, 3)
    return SimpleNamespace(
        stack=stack, teacher_parts=parts, dev=dev, eval=ev, grades=GRADES, teacher_name="stacked (test)"
    )


def test_relevance_teachers_measure_each_alone_and_stacked() -> None:
    rel = _stacked_rel(np.random.default_rng(0))
    esci = (
        ["oak", "oak", "rug", "rug"],
        ["oak", "zzz", "rug", "zzz"],
        np.array([True, False, True, False]),
        {},
    )
    t = relevance_teachers(rel, esci, seed=0)
    rows = {r["teacher"]: r for r in t["rows"]}
    assert set(rows) == {
        "cross-encoder, raw (its own probabilities)",
        "MiniLM cosine, raw",
        "cross-encoder, through the stacker",
        "MiniLM cosine, through the stacker",
        "stacked: cross-encoder + MiniLM cosine",
    }
    stacked = rows["stacked: cross-encoder + MiniLM cosine"]
    # The cosine carries the grade and the cross-encoder is noise: the stack finds it, the noise does not.
    assert stacked["grade_accuracy"] > 0.95 and stacked["esci"]["auc"] == 1.0
    assert rows["cross-encoder, raw (its own probabilities)"]["grade_accuracy"] < 0.7
    assert "grade_accuracy" not in rows["MiniLM cosine, raw"]  # a cosine has no grades
    lo, hi = stacked["esci"]["auc_ci"]
    assert lo <= stacked["esci"]["auc"] <= hi
    assert t["distilled"] == "stacked (test)" and t["esci_pairs"] == 4
    text = "\n".join(_relevance_teachers(t))
    assert "| stacked: cross-encoder + MiniLM cosine | 1.000 |" in text
    assert "ESCI AUC" in text and "acc. partial" in text
    # The cosine carries the grade: the stack's best-over-worst log-odds rise with it.
    assert t["stack_log_odds_best_over_worst_per_sd"]["MiniLM cosine"] > 1
    assert "What the stack leans on" in text and "MiniLM cosine +" in text
    # Without the real data the table still renders, without the ESCI columns.
    no_real = relevance_teachers(rel, None, seed=0)
    assert "ESCI AUC" not in "\n".join(_relevance_teachers(no_real))
