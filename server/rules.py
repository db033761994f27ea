"""Golden and corrective rules, read from the bundle's rules.json and applied around the models.

Rules are mined by training (training/rules.py) and kept only when they meet a precision bar on dev data;
the server just evaluates them. A relevance rule is a conjunction of threshold conditions on named features
and sets a grade. Pre-rules see only lexical features and answer before the model; post-rules also see the
model's output and correct it. The first matching rule wins.

Grades are a bundle's own, listed worst to best in its manifest (components.relevance.grades): three for
WANDS-style and synthetic data, ESCI's four for ESCI-style data. Rules name grades by name, so one parser and
one cascade serve any grade set.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from server.featurize import LEXICAL_FEATURES

GRADES = ("irrelevant", "partial", "exact")
"""The three grades: WANDS's, the synthetic catalogue's, and those of every bundle before grade sets."""
ESCI_GRADES = ("irrelevant", "complement", "substitute", "exact")
"""ESCI's four grades, worst to best (the order of ESCI's own gains: E 1, S 0.1, C 0.01, I 0)."""
LEGACY_GRADES = {
    "irrelevant": "irrelevant",
    "complement": "partial",
    "substitute": "partial",
    "partial": "partial",
    "exact": "exact",
}
"""Every grade name a bundle may use -> the nearest of GRADES, which the wire's `Grade` enum carries so that
clients built for three grades keep working (protos/sift/v1/relevance.proto)."""
# A pre-rule may use the lexical features only (known before any model runs); a post-rule also the
# models' outputs (server/relevance_cascade.py:post_features builds them).
POST_FEATURES = (
    *LEXICAL_FEATURES,
    "cosine",
    "category_probability",
    "category_match",
    "model_grade",
    "model_score",
)
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


def check_grades(names: Sequence[str]) -> tuple[str, ...]:
    """A bundle's grade set, worst to best; raises ValueError saying what is wrong with it."""
    names = tuple(names)
    unknown = [name for name in names if name not in LEGACY_GRADES]
    if unknown:
        raise ValueError(f"unknown grades {unknown}: each must be one of {list(LEGACY_GRADES)}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"needs at least two distinct grades, got {list(names)}")
    ranks = [GRADES.index(LEGACY_GRADES[name]) for name in names]
    if ranks != sorted(ranks):
        raise ValueError(f"{list(names)} is not ordered worst to best")
    return names


@cache
def grade_values(n: int) -> np.ndarray:
    """The gain of each of n grades, worst to best, evenly spaced over [0, 1]: (0, 0.5, 1) for three grades,
    (0, 1/3, 2/3, 1) for ESCI's four. probabilities @ grade_values is the served score, an expected gain;
    even spacing keeps three-grade scores as they were and spreads four-grade ones over [0, 1] (ESCI's own
    gains, 1, 0.1, 0.01, 0, would squeeze everything but Exact under 0.1)."""
    values = np.linspace(0.0, 1.0, n, dtype=np.float32)
    values.setflags(write=False)
    return values


@cache
def grade_bands(n: int) -> np.ndarray:
    """[n, 2] score band of each grade: a rule that sets a grade clips the score into its band, so rank
    order within the band (from the model) survives and scores stay consistent with grades. Inner bands
    are equally wide, the two end bands 3/4 as wide: (0, 0.3), (0.3, 0.7), (0.7, 1) for three grades. Each
    band holds its grade's value."""
    edges = np.concatenate([[0.0], (np.arange(n - 1) + 0.75) / (n - 0.5), [1.0]])
    bands = np.stack([edges[:-1], edges[1:]], axis=1).astype(np.float32)
    bands.setflags(write=False)
    return bands


@dataclass(frozen=True, slots=True)
class Condition:
    feature: str
    op: str
    value: float

    def mask(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        return _OPS[self.op](features[self.feature], self.value)

    def to_json(self) -> list[Any]:
        return [self.feature, self.op, self.value]


@dataclass(frozen=True, slots=True)
class RelevanceRule:
    name: str
    conditions: tuple[Condition, ...]
    grade: int
    """Index into the bundle's grades."""
    precision: float = 0.0
    """Measured on dev data when the rule was mined (for the report and GetModelInfo)."""
    coverage: float = 0.0

    def mask(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.ones(len(next(iter(features.values()))), dtype=bool)
        for cond in self.conditions:
            out &= cond.mask(features)
        return out

    def to_json(self, grades: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "when": [c.to_json() for c in self.conditions],
            "grade": grades[self.grade],
            "precision": self.precision,
            "coverage": self.coverage,
        }


@dataclass(frozen=True, slots=True)
class Rules:
    intent_queries: dict[str, int]
    """Normalized query text -> label index: the query names a category exactly (golden rule)."""
    relevance_pre: tuple[RelevanceRule, ...]
    relevance_post: tuple[RelevanceRule, ...]
    grades: tuple[str, ...] = GRADES
    """The bundle's grades, worst to best, that the relevance rules' grade indices point into."""

    def to_json(self, labels: list[str]) -> dict[str, Any]:
        return {
            "intent": {"exact_query": {q: labels[i] for q, i in sorted(self.intent_queries.items())}},
            "relevance": {
                "pre": [r.to_json(self.grades) for r in self.relevance_pre],
                "post": [r.to_json(self.grades) for r in self.relevance_post],
            },
        }


def apply(
    rules: tuple[RelevanceRule, ...], features: Mapping[str, np.ndarray], undecided: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(grade per row, -1 where no rule fired; index of the rule that fired, -1 if none), for rows still
    `undecided`; the first matching rule wins."""
    grades = np.full(len(undecided), -1, dtype=np.int64)
    fired = np.full(len(undecided), -1, dtype=np.int64)
    open_rows = undecided.copy()
    for i, rule in enumerate(rules):
        hit = open_rows & rule.mask(features)
        grades[hit], fired[hit] = rule.grade, i
        open_rows &= ~hit
    return grades, fired


def clip_to_grade(scores: np.ndarray, grades: np.ndarray, num_grades: int) -> np.ndarray:
    bands = grade_bands(num_grades)
    return np.clip(scores, bands[grades, 0], bands[grades, 1])


def parse_rules(raw: Any, labels: list[str], grades: tuple[str, ...] = GRADES) -> Rules:
    """rules.json -> Rules over the bundle's `grades`; raises ValueError naming the entry at fault."""
    if not isinstance(raw, dict):
        raise ValueError("must hold a JSON object")
    label_index = {path: i for i, path in enumerate(labels)}
    exact = raw.get("intent", {}).get("exact_query", {})
    if not isinstance(exact, dict):
        raise ValueError("intent.exact_query must be an object")
    intent_queries = {}
    for query, label in exact.items():
        if label not in label_index:
            raise ValueError(f"intent.exact_query[{query!r}]: unknown label {label!r}")
        intent_queries[query] = label_index[label]
    relevance = raw.get("relevance", {})
    return Rules(
        intent_queries,
        _parse_relevance(relevance.get("pre", []), "relevance.pre", LEXICAL_FEATURES, grades),
        _parse_relevance(relevance.get("post", []), "relevance.post", POST_FEATURES, grades),
        grades,
    )


def _parse_relevance(
    raw: Any, where: str, allowed: tuple[str, ...], grades: tuple[str, ...]
) -> tuple[RelevanceRule, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list")
    rules = []
    for n, item in enumerate(raw):
        at = f"{where}[{n}]"
        try:
            conditions = tuple(Condition(str(f), str(op), float(v)) for f, op, v in item["when"])
            name = item["grade"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{at}: needs when [[feature, op, value], ...] and a grade") from e
        if name not in grades:
            raise ValueError(f"{at}.grade: {name!r} is not one of the bundle's grades {list(grades)}")
        grade = grades.index(name)
        for cond in conditions:
            if cond.feature not in allowed:
                raise ValueError(f"{at}: feature {cond.feature!r} is not one of {allowed}")
            if cond.op not in _OPS:
                raise ValueError(f"{at}: operator {cond.op!r} is not one of {tuple(_OPS)}")
        if not conditions:
            raise ValueError(f"{at}: a rule needs at least one condition")
        rules.append(
            RelevanceRule(
                str(item.get("name", f"rule{n}")),
                conditions,
                grade,
                float(item.get("precision", 0.0)),
                float(item.get("coverage", 0.0)),
            )
        )
    return tuple(rules)
