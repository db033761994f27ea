"""Golden and corrective rules, read from the bundle's rules.json and applied around the models.

Rules are mined by training (training/rules.py) and kept only when they meet a precision bar on dev data;
the server just evaluates them. A relevance rule is a conjunction of threshold conditions on named features
and sets a grade. Pre-rules see only lexical features and answer before the model; post-rules also see the
model's output and correct it. The first matching rule wins.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.featurize import LEXICAL_FEATURES

GRADES = ("irrelevant", "partial", "exact")
# Expected grade value per class (irrelevant, partial, exact): probabilities @ GRADE_VALUES is the score.
GRADE_VALUES = np.array([0.0, 0.5, 1.0], dtype=np.float32)
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
# Score band of each grade: a rule that sets a grade clips the score into its band, so rank order within
# the band (from the model) survives and scores stay consistent with grades.
GRADE_BANDS = ((0.0, 0.3), (0.3, 0.7), (0.7, 1.0))


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
    precision: float = 0.0
    """Measured on dev data when the rule was mined (for the report and GetModelInfo)."""
    coverage: float = 0.0

    def mask(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.ones(len(next(iter(features.values()))), dtype=bool)
        for cond in self.conditions:
            out &= cond.mask(features)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "when": [c.to_json() for c in self.conditions],
            "grade": GRADES[self.grade],
            "precision": self.precision,
            "coverage": self.coverage,
        }


@dataclass(frozen=True, slots=True)
class Rules:
    intent_queries: dict[str, int]
    """Normalized query text -> label index: the query names a category exactly (golden rule)."""
    relevance_pre: tuple[RelevanceRule, ...]
    relevance_post: tuple[RelevanceRule, ...]

    def to_json(self, labels: list[str]) -> dict[str, Any]:
        return {
            "intent": {"exact_query": {q: labels[i] for q, i in sorted(self.intent_queries.items())}},
            "relevance": {
                "pre": [r.to_json() for r in self.relevance_pre],
                "post": [r.to_json() for r in self.relevance_post],
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


def clip_to_grade(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    bands = np.array(GRADE_BANDS, dtype=np.float32)
    return np.clip(scores, bands[grades, 0], bands[grades, 1])


def parse_rules(raw: Any, labels: list[str]) -> Rules:
    """rules.json -> Rules; raises ValueError naming the entry at fault."""
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
        _parse_relevance(relevance.get("pre", []), "relevance.pre", LEXICAL_FEATURES),
        _parse_relevance(relevance.get("post", []), "relevance.post", POST_FEATURES),
    )


def _parse_relevance(raw: Any, where: str, allowed: tuple[str, ...]) -> tuple[RelevanceRule, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list")
    rules = []
    for n, item in enumerate(raw):
        at = f"{where}[{n}]"
        try:
            conditions = tuple(Condition(str(f), str(op), float(v)) for f, op, v in item["when"])
            grade = GRADES.index(item["grade"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{at}: needs when [[feature, op, value], ...] and a grade in {GRADES}") from e
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
