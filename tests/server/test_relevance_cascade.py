"""The relevance cascade: pre-rules answer first, post-rules correct the model, scores stay in their grade's
band; the server's split run (models called between the steps) equals training's whole run; three grades
score as they always did, and ESCI's four the same way."""

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
from server.rules import (
    ESCI_GRADES,
    POST_FEATURES,
    apply,
    clip_to_grade,
    grade_bands,
    grade_values,
    parse_rules,
)

# The three grades' values and bands before grade sets: three-grade bundles must keep scoring with them.
GRADE_VALUES = np.array([0.0, 0.5, 1.0], dtype=np.float32)
GRADE_BANDS = np.array([[0.0, 0.3], [0.3, 0.7], [0.7, 1.0]], dtype=np.float32)

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


def _features(n: int, seed: int = 0, num_grades: int = 3) -> tuple[CandidateFeatures, np.ndarray]:
    rng = np.random.default_rng(seed)
    lexical = {k: rng.random(n).astype(np.float32) for k in LEXICAL_FEATURES}
    lexical["title_equal"] = (rng.random(n) < 0.3).astype(np.float32)
    features = CandidateFeatures(
        lexical,
        rng.random((n, len(RELEVANCE_FEATURES))).astype(np.float32),
        (rng.random(n) < 0.5).astype(np.float32),
    )
    probs = rng.dirichlet(np.ones(num_grades), n).astype(np.float32)
    return features, probs


def _reference(features: CandidateFeatures, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cascade as training computed it before it lived in one module."""
    n = len(probs)
    pre, _ = apply(RULES.relevance_pre, features.lexical, np.ones(n, dtype=bool))
    post, _ = apply(RULES.relevance_post, post_features(features, probs), pre < 0)
    grades = np.where(post >= 0, post, probs.argmax(1))
    scores = np.clip(probs @ GRADE_VALUES, GRADE_BANDS[grades, 0], GRADE_BANDS[grades, 1])
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
    model = model_verdicts(RULES, features.take(todo), probs[todo])
    split = combine(RULES, pre_grades, pre_fired, todo, model)
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
    bands = GRADE_BANDS
    assert np.all(v.scores >= bands[v.grades, 0]) and np.all(v.scores <= bands[v.grades, 1])


def test_no_pre_rule_answer_leaves_every_candidate_to_the_model() -> None:
    features, probs = _features(5)
    features.lexical["title_equal"][:] = 0
    pre_grades, pre_fired = pre_rules(RULES, features.lexical)
    assert (pre_grades < 0).all() and (pre_fired < 0).all()
    v = combine(RULES, pre_grades, pre_fired, np.arange(5), model_verdicts(RULES, features, probs))
    assert (v.pre_rule < 0).all()


def test_post_features_are_what_post_rules_may_read() -> None:
    features, probs = _features(4)
    post = post_features(features, probs)
    assert tuple(post) == POST_FEATURES
    np.testing.assert_array_equal(post["cosine"], features.model_input[:, RelevanceColumn.COSINE])
    np.testing.assert_allclose(post["model_score"], probs @ GRADE_VALUES)


def test_three_grades_keep_their_values_and_bands() -> None:
    np.testing.assert_array_equal(grade_values(3), GRADE_VALUES)
    np.testing.assert_array_equal(grade_bands(3), GRADE_BANDS)
    np.testing.assert_array_equal(
        clip_to_grade(np.array([0.9, 0.1, 0.5], dtype=np.float32), np.array([0, 2, 1]), 3),
        np.array([0.3, 0.7, 0.5], dtype=np.float32),
    )


def test_four_grades_cascade_over_their_own_values_and_bands() -> None:
    """ESCI's four: evenly spaced gains (0, 1/3, 2/3, 1), bands that tile [0, 1] and hold their grade's gain,
    rules that name ESCI grades, and post-rules reading a four-grade model_grade."""
    values, bands = grade_values(4), grade_bands(4)
    np.testing.assert_allclose(values, [0.0, 1 / 3, 2 / 3, 1.0])
    assert bands[0, 0] == 0.0 and bands[-1, 1] == 1.0
    np.testing.assert_array_equal(bands[1:, 0], bands[:-1, 1])
    assert np.all((bands[:, 0] <= values) & (values <= bands[:, 1]))
    rules = parse_rules(
        {
            "relevance": {
                "pre": [{"name": "equal", "when": [["title_equal", ">=", 0.5]], "grade": "exact"}],
                "post": [
                    {
                        "name": "off_category",
                        "when": [["category_match", "<", 0.5], ["model_grade", ">", 2.5]],
                        "grade": "substitute",
                    }
                ],
            }
        },
        [],
        ESCI_GRADES,
    )
    features, probs = _features(300, seed=2, num_grades=4)
    v = cascade(rules, features, probs)
    by_pre = features.lexical["title_equal"] >= 0.5
    assert np.all(v.scores[by_pre] == 1.0) and np.all(v.grades[by_pre] == 3)
    corrected = ~by_pre & (features.category_match < 0.5) & (probs.argmax(1) == 3)
    assert corrected.any() and np.all(v.grades[corrected] == 2)
    model = ~by_pre & ~corrected
    np.testing.assert_array_equal(v.grades[model], probs[model].argmax(1))
    np.testing.assert_allclose(
        v.scores[model],
        np.clip(probs[model] @ values, bands[v.grades[model], 0], bands[v.grades[model], 1]),
        rtol=1e-6,
    )
    assert set(np.unique(v.grades[model]).tolist()) == {0, 1, 2, 3}
    assert np.all(v.scores >= bands[v.grades, 0]) and np.all(v.scores <= bands[v.grades, 1])


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
