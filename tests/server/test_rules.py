"""Rules from rules.json: parsing refuses what the server cannot evaluate; the first matching rule wins."""

from __future__ import annotations

import numpy as np
import pytest

from server.rules import ESCI_GRADES, GRADES, apply, check_grades, clip_to_grade, parse_rules

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
        (
            {"relevance": {"post": [{"when": [["cosine", ">", 0.5]], "grade": "great"}]}},
            r"relevance.post\[0\].grade: 'great' is not one of the bundle's grades",
        ),
        ({"relevance": {"post": [{"when": [["cosine", ">", 0.5]]}]}}, "and a grade"),
        ({"relevance": {"post": [{"when": [], "grade": "exact"}]}}, "at least one condition"),
        ({"intent": {"exact_query": {"x": "Nope"}}}, "unknown label 'Nope'"),
        ([], "must hold a JSON object"),
    ],
)
def test_parse_refuses(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(raw, LABELS)


def test_rules_name_the_bundles_own_grades() -> None:
    """Over ESCI's four grades, rules name ESCI grades by name, and a grade outside the set is refused."""
    pre = [
        {"name": "sub", "when": [["word_coverage", ">=", 0.5]], "grade": "substitute"},
        {"name": "comp", "when": [["word_coverage", ">=", 0.2]], "grade": "complement"},
    ]
    rules = parse_rules({"relevance": {"pre": pre}}, LABELS, ESCI_GRADES)
    assert rules.grades == ESCI_GRADES and [r.grade for r in rules.relevance_pre] == [2, 1]
    assert rules.to_json(LABELS)["relevance"]["pre"][0]["grade"] == "substitute"
    with pytest.raises(ValueError, match=r"relevance.pre\[0\].grade: 'substitute' is not one of"):
        parse_rules({"relevance": {"pre": pre}}, LABELS)  # the three grades
    partial = [{"when": [["word_coverage", ">=", 0.5]], "grade": "partial"}]
    with pytest.raises(ValueError, match=r"relevance.pre\[0\].grade: 'partial' is not one of"):
        parse_rules({"relevance": {"pre": partial}}, LABELS, ESCI_GRADES)


def test_check_grades() -> None:
    assert check_grades(list(GRADES)) == GRADES and check_grades(ESCI_GRADES) == ESCI_GRADES
    assert check_grades(("irrelevant", "exact")) == ("irrelevant", "exact")
    for bad, message in [
        (("exact", "irrelevant"), "not ordered worst to best"),
        (("irrelevant",), "at least two distinct"),
        (("irrelevant", "relevant"), r"unknown grades \['relevant'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_grades(bad)


def test_clip_to_grade_keeps_order_within_band() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.55], dtype=np.float32)
    clipped = clip_to_grade(scores, np.array([0, 2, 1, 1]), 3)
    assert clipped.tolist() == pytest.approx([0.3, 0.7, 0.5, 0.55])
