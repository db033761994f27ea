"""The relevance cascade: pre-rules answer first, post-rules correct the model, scores stay in their grade's
band; the server's split run (models called between the steps) equals training's whole run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from server.featurize import LEXICAL_FEATURES, RELEVANCE_FEATURES, RelevanceColumn
from server.relevance_cascade import (
    CandidateFeatures,
    candidate_features,
    cascade,
    combine,
    model_verdicts,
    post_features,
    pre_rules,
)
from server.rules import GRADE_BANDS, GRADE_VALUES, POST_FEATURES, apply, clip_to_grade, parse_rules

RULES = parse_rules(
    {
        "relevance": {
            "pre": [{"name": "equal", "when": [["title_equal", ">=", 0.5]], "grade": "exact"}],
            "post": [
                {
                    "name": "off_category",
                    "when": [["category_match", "<", 0.5], ["model_grade", ">", 1.5]],
                    "grade": "partial",
                }
            ],
        }
    },
    [],
)


def _features(n: int, seed: int = 0) -> tuple[CandidateFeatures, np.ndarray]:
    rng = np.random.default_rng(seed)
    lexical = {k: rng.random(n).astype(np.float32) for k in LEXICAL_FEATURES}
    lexical["title_equal"] = (rng.random(n) < 0.3).astype(np.float32)
    features = CandidateFeatures(
        lexical,
        rng.random((n, len(RELEVANCE_FEATURES))).astype(np.float32),
        (rng.random(n) < 0.5).astype(np.float32),
    )
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return features, probs


def _reference(features: CandidateFeatures, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cascade as training computed it before it lived in one module."""
    n = len(probs)
    pre, _ = apply(RULES.relevance_pre, features.lexical, np.ones(n, dtype=bool))
    post, _ = apply(RULES.relevance_post, post_features(features, probs), pre < 0)
    grades = np.where(post >= 0, post, probs.argmax(1))
    scores = clip_to_grade(probs @ GRADE_VALUES, grades)
    grades = np.where(pre >= 0, pre, grades)
    return np.where(pre >= 0, GRADE_VALUES[np.maximum(pre, 0)], scores), grades


def test_cascade_matches_reference_and_split_run() -> None:
    features, probs = _features(200)
    whole = cascade(RULES, features, probs)
    scores, grades = _reference(features, probs)
    np.testing.assert_array_equal(whole.grades, grades)
    np.testing.assert_allclose(whole.scores, scores)
    assert whole.scores.dtype == np.float32

    # The server's order: pre-rules, then the model only on what they leave open.
    pre_grades, pre_fired = pre_rules(RULES, features.lexical)
    todo = np.flatnonzero(pre_grades < 0)
    split = combine(pre_grades, pre_fired, todo, model_verdicts(RULES, features.take(todo), probs[todo]))
    np.testing.assert_array_equal(split.scores, whole.scores)
    np.testing.assert_array_equal(split.grades, whole.grades)
    assert split.rule_names(RULES) == whole.rule_names(RULES)


def test_rules_name_their_verdicts_and_scores_stay_in_band() -> None:
    features, probs = _features(200, seed=1)
    v = cascade(RULES, features, probs)
    names = v.rule_names(RULES)
    by_pre = features.lexical["title_equal"] >= 0.5
    assert all(names[i] == "equal" for i in np.flatnonzero(by_pre))
    assert np.all(v.scores[by_pre] == 1.0) and np.all(v.grades[by_pre] == 2)
    corrected = (~by_pre) & (features.category_match < 0.5) & (probs.argmax(1) == 2)
    assert corrected.any()
    assert all(names[i] == "off_category" for i in np.flatnonzero(corrected))
    assert np.all(v.grades[corrected] == 1)
    untouched = ~by_pre & ~corrected
    assert all(names[i] == "" for i in np.flatnonzero(untouched))
    bands = np.array(GRADE_BANDS, dtype=np.float32)
    assert np.all(v.scores >= bands[v.grades, 0]) and np.all(v.scores <= bands[v.grades, 1])


def test_no_pre_rule_answer_leaves_every_candidate_to_the_model() -> None:
    features, probs = _features(5)
    features.lexical["title_equal"][:] = 0
    pre_grades, pre_fired = pre_rules(RULES, features.lexical)
    assert (pre_grades < 0).all() and (pre_fired < 0).all()
    v = combine(pre_grades, pre_fired, np.arange(5), model_verdicts(RULES, features, probs))
    assert (v.pre_rule < 0).all()


def test_post_features_are_what_post_rules_may_read() -> None:
    features, probs = _features(4)
    post = post_features(features, probs)
    assert tuple(post) == POST_FEATURES
    np.testing.assert_array_equal(post["cosine"], features.model_input[:, RelevanceColumn.COSINE])
    np.testing.assert_allclose(post["model_score"], probs @ GRADE_VALUES)


def test_candidate_features_name_their_columns() -> None:
    lexical = {k: np.array([0.25, 1.0], dtype=np.float32) for k in LEXICAL_FEATURES}
    query = np.array([1.0, 0.0], dtype=np.float32)
    candidates = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    intent = np.array([0.1, 0.7, 0.2], dtype=np.float32)
    f = candidate_features(lexical, query, candidates, intent, np.array([1, 2]))
    assert RELEVANCE_FEATURES == ("cosine", "word_coverage", "char_coverage", "category_probability")
    np.testing.assert_allclose(f.model_input[:, RelevanceColumn.COSINE], [1.0, 0.0])
    np.testing.assert_allclose(f.model_input[:, RelevanceColumn.WORD_COVERAGE], [0.25, 1.0])
    np.testing.assert_allclose(f.model_input[:, RelevanceColumn.CATEGORY_PROBABILITY], [0.7, 0.2])
    np.testing.assert_array_equal(f.category_match, [1.0, 0.0])


def test_cascade_imports_no_transport_service_or_runtime() -> None:
    """Training imports the cascade: it must stay pure numpy over the feature and rule modules."""
    code = (
        "import sys, server.relevance_cascade;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'torch', 'training')"
        " or m.startswith(('server.service', 'server.transport', 'server.runtime')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
