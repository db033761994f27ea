"""Rules from rules.json: parsing refuses what the server cannot evaluate; the first matching rule wins."""

from __future__ import annotations

import numpy as np
import pytest

from server.rules import apply, clip_to_grade, parse_rules

LABELS = ["Furniture > Sofas", "Rugs > Area Rugs"]


def test_parse_and_apply_first_match_wins() -> None:
    rules = parse_rules(
        {
            "intent": {"exact_query": {"sofa": "Furniture > Sofas"}},
            "relevance": {
                "pre": [
                    {"name": "equal", "when": [["title_equal", ">=", 0.5]], "grade": "exact"},
                    {
                        "name": "none",
                        "when": [["word_coverage", "<=", 0], ["char_coverage", "<", 0.2]],
                        "grade": "irrelevant",
                    },
                    {"name": "late", "when": [["word_coverage", "<=", 0]], "grade": "partial"},
                ],
                "post": [],
            },
        },
        LABELS,
    )
    assert rules.intent_queries == {"sofa": 0}
    features = {
        "title_equal": np.array([1.0, 0.0, 0.0, 0.0]),
        "word_coverage": np.array([1.0, 0.0, 0.0, 0.5]),
        "char_coverage": np.array([1.0, 0.1, 0.5, 0.6]),
        "query_words": np.array([2.0, 2.0, 2.0, 2.0]),
    }
    grades, fired = apply(rules.relevance_pre, features, np.ones(4, dtype=bool))
    assert grades.tolist() == [2, 0, 1, -1]
    assert fired.tolist() == [0, 1, 2, -1]
    # Rows already decided are left alone.
    grades, _ = apply(rules.relevance_pre, features, np.array([False, True, True, True]))
    assert grades.tolist() == [-1, 0, 1, -1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"relevance": {"pre": [{"when": [["cosine", ">", 0.5]], "grade": "exact"}]}}, "feature 'cosine'"),
        (
            {"relevance": {"pre": [{"when": [["word_coverage", "!=", 0.5]], "grade": "exact"}]}},
            "operator '!='",
        ),
        ({"relevance": {"post": [{"when": [["cosine", ">", 0.5]], "grade": "great"}]}}, "grade in"),
        ({"relevance": {"post": [{"when": [], "grade": "exact"}]}}, "at least one condition"),
        ({"intent": {"exact_query": {"x": "Nope"}}}, "unknown label 'Nope'"),
        ([], "must hold a JSON object"),
    ],
)
def test_parse_refuses(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(raw, LABELS)


def test_clip_to_grade_keeps_order_within_band() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.55], dtype=np.float32)
    clipped = clip_to_grade(scores, np.array([0, 2, 1, 1]))
    assert clipped.tolist() == pytest.approx([0.3, 0.7, 0.5, 0.55])
