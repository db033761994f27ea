"""The relevance cascade: the one place candidate features become scores and grades.

Golden pre-rules answer first, from lexical features alone; the relevance model scores what they leave
open; corrective post-rules may change the model's grade; the score is clipped into the band of the final
grade, so rank order within a band (from the model) survives. ScoreRelevance (server/service/relevance.py)
runs it on requests, and training runs it for the evaluation it writes into every bundle, so the figures
measure what is served. Pure numpy: the models are called by the caller, between `pre_rules` and
`model_verdicts` on the server, before `cascade` in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server import tracing
from server.featurize import RelevanceColumn, relevance_features
from server.rules import Rules, apply, clip_to_grade, grade_values


@dataclass(frozen=True, slots=True)
class CandidateFeatures:
    """What the cascade reads per candidate."""

    lexical: dict[str, np.ndarray]
    """LEXICAL_FEATURES, float32: the pre-rules' inputs."""
    model_input: np.ndarray
    """[n, len(RELEVANCE_FEATURES)] float32: the relevance model's input (columns: RelevanceColumn)."""
    category_match: np.ndarray
    """float32 0/1: the candidate's category is the query's most likely intent."""

    def take(self, rows: np.ndarray) -> CandidateFeatures:
        return CandidateFeatures(
            {k: v[rows] for k, v in self.lexical.items()}, self.model_input[rows], self.category_match[rows]
        )


def candidate_features(
    lexical: dict[str, np.ndarray],
    query_vector: np.ndarray,
    candidate_vectors: np.ndarray,
    query_intent: np.ndarray,
    categories: np.ndarray,
) -> CandidateFeatures:
    """The features of one query's candidates from the served models' outputs: the query's and candidates'
    unit vectors, the intent model's probabilities for the query, and each candidate's category index
    (known for products, predicted for titles)."""
    return CandidateFeatures(
        lexical,
        relevance_features(lexical, query_vector, candidate_vectors, query_intent[categories]),
        (categories == query_intent.argmax()).astype(np.float32),
    )


def grade_scores(probs: np.ndarray) -> np.ndarray:
    """The model's score of each candidate: its expected grade value (server/rules.py grade_values, one
    column of `probs` per grade, worst to best), in [0, 1]."""
    return probs @ grade_values(probs.shape[1])


def post_features(features: CandidateFeatures, probs: np.ndarray) -> dict[str, np.ndarray]:
    """What a post-rule may read (POST_FEATURES): the lexical features, two model inputs, the category
    match, and the model's grade and score."""
    return {
        **features.lexical,
        "cosine": features.model_input[:, RelevanceColumn.COSINE],
        "category_probability": features.model_input[:, RelevanceColumn.CATEGORY_PROBABILITY],
        "category_match": features.category_match,
        "model_grade": probs.argmax(1).astype(np.float32),
        "model_score": grade_scores(probs),
    }


@dataclass(frozen=True, slots=True)
class Verdicts:
    scores: np.ndarray
    """float32 in [0, 1]."""
    grades: np.ndarray
    """int64 index into the bundle's grades (Rules.grades)."""
    pre_rule: np.ndarray
    """Index of the pre-rule that answered, -1 where the model did."""
    post_rule: np.ndarray
    """Index of the post-rule that changed the model's grade, -1 where none did."""

    def rule_names(self, rules: Rules) -> list[str]:
        """The name of the rule behind each verdict, "" where the model's grade stands."""
        pre, post = self.pre_rule.tolist(), self.post_rule.tolist()
        return [
            rules.relevance_pre[p].name if p >= 0 else rules.relevance_post[q].name if q >= 0 else ""
            for p, q in zip(pre, post, strict=True)
        ]


def pre_rules(rules: Rules, lexical: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(grade per candidate, -1 where no pre-rule answered; index of the pre-rule that did, -1 if none)."""
    n = len(next(iter(lexical.values())))
    with tracing.step("rules", stage="pre", candidates=n, rules=len(rules.relevance_pre)):
        return apply(rules.relevance_pre, lexical, np.ones(n, dtype=bool))


def model_verdicts(rules: Rules, features: CandidateFeatures, probs: np.ndarray) -> Verdicts:
    """Verdicts on candidates the model scored (`probs`, [n, len(rules.grades)]): the post-rules may change
    the model's grade, and the score is clipped into the band of the final grade."""
    grades = probs.argmax(1)
    n = len(grades)
    with tracing.step("rules", stage="post", candidates=n, rules=len(rules.relevance_post)):
        fixed, fired = apply(rules.relevance_post, post_features(features, probs), np.ones(n, dtype=bool))
    corrected = np.where((fixed >= 0) & (fixed != grades), fired, -1)
    grades = np.where(fixed >= 0, fixed, grades)
    return Verdicts(
        clip_to_grade(grade_scores(probs), grades, len(rules.grades)),
        grades,
        np.full(n, -1, dtype=np.int64),
        corrected,
    )


def combine(
    rules: Rules, pre_grades: np.ndarray, pre_fired: np.ndarray, todo: np.ndarray, model: Verdicts | None
) -> Verdicts:
    """Every candidate's verdict: the pre-rule's where one answered (its grade's value as the score), the
    model's at the rows `todo` that none answered."""
    decided = pre_grades >= 0
    values = grade_values(len(rules.grades))
    scores = np.where(decided, values[np.maximum(pre_grades, 0)], 0.0).astype(np.float32)
    grades = pre_grades.copy()
    post = np.full(len(pre_grades), -1, dtype=np.int64)
    if model is not None and len(todo):
        scores[todo], grades[todo], post[todo] = model.scores, model.grades, model.post_rule
    return Verdicts(scores, grades, pre_fired, post)


def cascade(rules: Rules, features: CandidateFeatures, probs: np.ndarray) -> Verdicts:
    """The whole cascade when the model's probabilities are known for every candidate (training's
    evaluation); the server calls the same steps around its model calls."""
    pre_grades, pre_fired = pre_rules(rules, features.lexical)
    todo = np.flatnonzero(pre_grades < 0)
    model = model_verdicts(rules, features.take(todo), probs[todo])
    return combine(rules, pre_grades, pre_fired, todo, model)
