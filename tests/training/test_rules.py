"""Rule mining: rules meet their precision bar on their own dev data, and a corrective rule fixes a
systematic model error."""

from __future__ import annotations

import numpy as np

from server.rules import ESCI_GRADES, apply
from training.rules import MIN_PRECISION, mine_intent_rules, mine_post_rules, mine_pre_rules, rule_report


def _lexical(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Grades that lexical facts mostly decide: no shared word -> irrelevant; all -> exact or partial."""
    word = rng.choice([0.0, 0.5, 1.0], size=n)
    char = np.clip(word + rng.normal(0, 0.1, n), 0, 1)
    equal = (word == 1.0) & (rng.random(n) < 0.2)
    grades = np.where(word == 0, 0, np.where(word == 1.0, np.where(rng.random(n) < 0.7, 2, 1), 1))
    grades = np.where(equal, 2, grades)
    noise = rng.random(n) < 0.02
    grades = np.where(noise, rng.integers(0, 3, n), grades)
    return {
        "title_equal": equal.astype(np.float32),
        "word_coverage": word.astype(np.float32),
        "char_coverage": char.astype(np.float32),
        "query_words": rng.integers(1, 4, n).astype(np.float32),
    }, grades


def test_pre_rules_meet_precision_on_dev() -> None:
    rng = np.random.default_rng(0)
    train, train_grades = _lexical(4000, rng)
    dev, dev_grades = _lexical(1500, rng)
    rules = mine_pre_rules(train, train_grades, dev, dev_grades)
    assert rules, "the no-overlap -> irrelevant and equal-title -> exact rules should be found"
    for rule in rules:
        assert rule.precision >= MIN_PRECISION
        hit = rule.mask(dev)
        assert np.mean(dev_grades[hit] == rule.grade) >= MIN_PRECISION
    assert {r.grade for r in rules} >= {0}
    report = rule_report(rules, dev, dev_grades)
    assert sum(r["coverage"] for r in report) > 0.2


def test_post_rule_corrects_systematic_error() -> None:
    rng = np.random.default_rng(1)

    def data(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        lex, grades = _lexical(n, rng)
        model = grades.copy()
        # The "model" calls every no-overlap candidate partial: a corrective rule should set it irrelevant.
        model[lex["word_coverage"] == 0] = 1
        feats = {
            **lex,
            "cosine": rng.random(n).astype(np.float32),
            "category_probability": rng.random(n).astype(np.float32),
            "category_match": (rng.random(n) < 0.5).astype(np.float32),
            "model_grade": model.astype(np.float32),
            "model_score": model.astype(np.float32) / 2,
        }
        return feats, grades

    train, train_grades = data(3000)
    dev, dev_grades = data(1000)
    rules = mine_post_rules(train, train_grades, dev, dev_grades)
    assert rules
    before = np.mean(dev["model_grade"] == dev_grades)
    fixed, _ = apply(tuple(rules), dev, np.ones(len(dev_grades), dtype=bool))
    after = np.mean(np.where(fixed >= 0, fixed, dev["model_grade"]) == dev_grades)
    assert after > before + 0.1


def test_intent_rules_from_label_names_and_repeated_queries() -> None:
    labels = ["Furniture > Sofas", "Rugs > Area Rugs", "Rugs > Outdoor Rugs"]

    def words(text: str) -> list[str]:
        return text.lower().replace(">", " ").split()

    train_texts = ["rug", "rug", "rug", "rug", "couch"]
    train_labels = np.array([1, 1, 1, 1, 0])
    table, stats = mine_intent_rules(
        labels, words, ["sofa", "area rugs", "couch"], np.array([0, 1, 0]), train_texts, train_labels
    )
    assert table["sofas"] == 0 and table["sofa"] == 0 and table["area rugs"] == 1
    assert table["rug"] == 1  # repeated with one label in training
    assert "couch" not in table  # seen once only
    assert stats["kept"] and stats["dev_precision"] == 1.0


def test_intent_rules_dropped_when_dev_disagrees() -> None:
    labels = ["A > sofas", "B > beds"]
    table, stats = mine_intent_rules(
        labels, str.split, ["sofas", "beds"], np.array([1, 0]), [], np.array([], dtype=np.int64)
    )
    assert table == {} and stats["kept"] is False


def test_rules_over_four_grades_name_them() -> None:
    """Over ESCI's grades the same data gives rules that name ESCI grades, at their four-grade indices; a
    model that calls substitutes exact gets a corrective rule back to substitute."""
    rng = np.random.default_rng(2)
    to_esci = np.array([0, 2, 3])  # irrelevant, partial -> substitute, exact

    def data(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        lex, grades = _lexical(n, rng)
        grades = to_esci[grades]
        model = grades.copy()
        model[(lex["word_coverage"] == 0.5) & (grades == 2)] = 3  # substitutes called exact
        return {
            **lex,
            "cosine": rng.random(n).astype(np.float32),
            "category_probability": rng.random(n).astype(np.float32),
            "category_match": (rng.random(n) < 0.5).astype(np.float32),
            "model_grade": model.astype(np.float32),
            "model_score": model.astype(np.float32) / 3,
        }, grades

    (train, train_grades), (dev, dev_grades) = data(4000), data(1500)
    pre = mine_pre_rules(train, train_grades, dev, dev_grades, ESCI_GRADES)
    assert pre and {r.grade for r in pre} <= {0, 2, 3}
    assert all(r.name.endswith(f"-> {ESCI_GRADES[r.grade]}") for r in pre)
    assert {row["grade"] for row in rule_report(pre, dev, dev_grades, ESCI_GRADES)} <= set(ESCI_GRADES)
    post = mine_post_rules(train, train_grades, dev, dev_grades, ESCI_GRADES)
    assert any(r.grade == 2 and r.name.endswith("-> substitute") for r in post)
