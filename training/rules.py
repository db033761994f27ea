"""Rule mining for the relevance framework: golden pre-rules and corrective post-rules are searched over a
grid of threshold conditions on training pairs and kept only when they hold on dev pairs. The server applies
them from rules.json (server/rules.py); nothing here is hand-written per catalogue. Grades are indices into
the data's grade set (`grades`, worst to best), and rules name them by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from server.featurize import LEXICAL_FEATURES
from server.rules import GRADES, POST_FEATURES, Condition, RelevanceRule, apply

MIN_PRECISION = 0.95
"""A golden pre-rule answers instead of the model, so it must be right at least this often on dev."""
MAX_RULES = 6
MIN_POST_PRECISION = 0.6
"""A corrective rule must also be right on most of what it touches, not merely less wrong than the model."""

# Thresholds tried per feature; both directions are tried for each. model_grade's are between every two
# grades (_grid).
_GRID: dict[str, tuple[float, ...]] = {
    "title_equal": (0.5,),
    "word_coverage": (0.0, 0.34, 0.5, 0.67, 0.99),
    "char_coverage": (0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
    "query_words": (1.5, 2.5),
    "cosine": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    "category_probability": (0.05, 0.2, 0.5),
    "category_match": (0.5,),
    "model_score": (0.3, 0.5, 0.7),
}


def _grid(name: str, num_grades: int) -> tuple[float, ...]:
    return tuple(k + 0.5 for k in range(num_grades - 1)) if name == "model_grade" else _GRID[name]


def _conditions(features: tuple[str, ...], num_grades: int) -> list[Condition]:
    out = []
    for name in features:
        for value in _grid(name, num_grades):
            out += (
                [Condition(name, ">=", value), Condition(name, "<", value)]
                if value > 0
                else [Condition(name, "<=", value)]
            )
    return out


def _candidates(features: tuple[str, ...], num_grades: int) -> list[tuple[Condition, ...]]:
    single = _conditions(features, num_grades)
    pairs = [(a, b) for a, b in combinations(single, 2) if a.feature != b.feature]
    return [(c,) for c in single] + pairs


def mine_pre_rules(
    train: Mapping[str, np.ndarray],
    train_grades: np.ndarray,
    dev: Mapping[str, np.ndarray],
    dev_grades: np.ndarray,
    grades: Sequence[str] = GRADES,
    min_support: int = 20,
) -> list[RelevanceRule]:
    """Greedy: the candidate covering the most still-uncovered training pairs at >= MIN_PRECISION on train,
    kept if it also reaches MIN_PRECISION on dev (with support there); repeat."""
    cands = _candidates(LEXICAL_FEATURES, len(grades))
    train_masks = [_mask(c, train) for c in cands]
    dev_masks = [_mask(c, dev) for c in cands]
    open_train = np.ones(len(train_grades), dtype=bool)
    rules: list[RelevanceRule] = []
    rejected: set[tuple[int, int]] = set()
    while len(rules) < MAX_RULES:
        best = None
        for i, mask in enumerate(train_masks):
            hit = mask & open_train
            if hit.sum() < min_support:
                continue
            counts = np.bincount(train_grades[hit], minlength=len(grades))
            grade = int(counts.argmax())
            if (i, grade) in rejected or counts[grade] / hit.sum() < MIN_PRECISION:
                continue
            if best is None or hit.sum() > best[0]:
                best = (int(hit.sum()), i, grade)
        if best is None:
            break
        _, i, grade = best
        dev_hit = dev_masks[i]
        dev_precision = float(np.mean(dev_grades[dev_hit] == grade)) if dev_hit.any() else 0.0
        if dev_hit.sum() < max(5, min_support // 4) or dev_precision < MIN_PRECISION:
            rejected.add((i, grade))
            continue
        rules.append(
            RelevanceRule(
                _name(cands[i], grades[grade]),
                cands[i],
                grade,
                round(dev_precision, 4),
                round(float(dev_hit.mean()), 4),
            )
        )
        open_train &= ~train_masks[i]
    return rules


def mine_post_rules(
    train: Mapping[str, np.ndarray],
    train_grades: np.ndarray,
    dev: Mapping[str, np.ndarray],
    dev_grades: np.ndarray,
    grades: Sequence[str] = GRADES,
    min_support: int = 20,
    min_gain: float = 0.002,
) -> list[RelevanceRule]:
    """Corrective rules: where the model's grade is often wrong in a way a condition predicts, set the grade
    the data says. Kept when it raises grade accuracy on train and on dev by at least `min_gain`."""
    cands = [c for c in _candidates(POST_FEATURES, len(grades)) if any(x.feature == "model_grade" for x in c)]
    rules: list[RelevanceRule] = []
    train_pred = train["model_grade"].astype(np.int64).copy()
    dev_pred = dev["model_grade"].astype(np.int64).copy()
    # The server applies the first matching rule only, so later rules see only rows no rule took yet.
    open_train = np.ones(len(train_grades), dtype=bool)
    open_dev = np.ones(len(dev_grades), dtype=bool)
    while len(rules) < MAX_RULES:
        best = None
        for cond in cands:
            hit = _mask(cond, train) & open_train
            if hit.sum() < min_support:
                continue
            grade = int(np.bincount(train_grades[hit], minlength=len(grades)).argmax())
            gain = (np.sum(train_grades[hit] == grade) - np.sum(train_grades[hit] == train_pred[hit])) / len(
                train_grades
            )
            if gain >= min_gain and (best is None or gain > best[0]):
                best = (gain, cond, grade)
        if best is None:
            break
        _, cond, grade = best
        dev_hit = _mask(cond, dev) & open_dev
        dev_gain = (
            np.sum(dev_grades[dev_hit] == grade) - np.sum(dev_grades[dev_hit] == dev_pred[dev_hit])
        ) / max(len(dev_grades), 1)
        cands.remove(cond)
        precision = float(np.mean(dev_grades[dev_hit] == grade)) if dev_hit.any() else 0.0
        if dev_gain < min_gain or precision < MIN_POST_PRECISION:
            continue
        rules.append(
            RelevanceRule(
                _name(cond, grades[grade]),
                cond,
                grade,
                round(precision, 4),
                round(float(dev_hit.mean()), 4),
            )
        )
        taken = _mask(cond, train) & open_train
        train_pred[taken] = grade
        dev_pred[dev_hit] = grade
        open_train &= ~taken
        open_dev &= ~dev_hit
    return rules


def rule_report(
    rules: list[RelevanceRule],
    features: Mapping[str, np.ndarray],
    grades: np.ndarray,
    names: Sequence[str] = GRADES,
) -> list[dict[str, object]]:
    """Coverage and precision of each rule on a data set (`grades`: indices into `names`), in the order the
    server applies them."""
    fired_grades, fired = apply(tuple(rules), features, np.ones(len(grades), dtype=bool))
    out = []
    for i, rule in enumerate(rules):
        hit = fired == i
        out.append(
            {
                "rule": rule.name,
                "grade": names[rule.grade],
                "coverage": round(float(hit.mean()), 4),
                "precision": round(float(np.mean(grades[hit] == fired_grades[hit])), 4)
                if hit.any()
                else None,
            }
        )
    return out


def mine_intent_rules(
    labels: list[str],
    words_of: callable,
    dev_texts: list[str],
    dev_labels: np.ndarray,
    train_texts: list[str],
    train_labels: np.ndarray,
) -> tuple[dict[str, int], dict[str, float]]:
    """Golden intent rule: a query that is exactly a label's leaf name (or its singular), or a labelled
    training query repeated with one label, means that label. Each entry must be unambiguous, and the rule
    as a whole must reach MIN_PRECISION on dev where dev covers it."""
    seen: dict[str, set[int]] = {}
    for i, label in enumerate(labels):
        name = " ".join(words_of(label.split(">")[-1]))
        for form in {name, name[:-1] if name.endswith("s") else name}:
            if form:
                seen.setdefault(form, set()).add(i)
    counts: dict[str, dict[int, int]] = {}
    for text, label in zip(train_texts, train_labels.tolist(), strict=True):
        if label >= 0:
            key = " ".join(words_of(text))
            counts.setdefault(key, {}).setdefault(label, 0)
            counts[key][label] += 1
    for key, by_label in counts.items():
        label, n = max(by_label.items(), key=lambda kv: kv[1])
        if n >= 3 and n / sum(by_label.values()) >= MIN_PRECISION and key not in seen:
            seen[key] = {label}
    table = {form: next(iter(idx)) for form, idx in seen.items() if len(idx) == 1}
    hits = [
        (table[k], g)
        for k, g in ((" ".join(words_of(t)), g) for t, g in zip(dev_texts, dev_labels, strict=False))
        if k in table
    ]
    precision = float(np.mean([a == b for a, b in hits])) if hits else None
    stats = {
        "entries": len(table),
        "dev_coverage": round(len(hits) / max(len(dev_texts), 1), 4),
        "dev_precision": precision,
    }
    if precision is not None and precision < MIN_PRECISION:
        return {}, {**stats, "kept": False}
    return table, {**stats, "kept": True}


def _mask(conds: tuple[Condition, ...], features: Mapping[str, np.ndarray]) -> np.ndarray:
    out = np.ones(len(next(iter(features.values()))), dtype=bool)
    for c in conds:
        out &= c.mask(features)
    return out


def _name(conds: tuple[Condition, ...], grade: str) -> str:
    return " and ".join(f"{c.feature} {c.op} {c.value:g}" for c in conds) + f" -> {grade}"
