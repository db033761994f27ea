"""BM25 floor: stemming, a score worked out by hand, rankings, and agreement with a plain-loop reference."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from training.bm25 import BM25, tokenize

CLASSES = [
    "Accent Chairs",
    "Dining Tables",
    "Office Chairs",
    "Bath Accessories",
    "Storage Benches",
    "Wall Shelves",
]


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("chairs", "chair"),
        ("benches", "bench"),
        ("shelves", "shelf"),
        ("accessories", "accessory"),
        ("glasses", "glass"),
        ("boxes", "box"),
        ("gloves", "glove"),
        ("sizes", "size"),
        ("dress", "dress"),
        ("cactus", "cactus"),
        ("gas", "gas"),
        ("bus", "bus"),
    ],
)
def test_plural_stemming(word: str, stem: str) -> None:
    assert tokenize(word) == [stem]


def test_tokenize_lowercases_and_splits() -> None:
    assert tokenize("Accent Chairs") == tokenize("accent chair") == ["accent", "chair"]
    assert tokenize("Men's 4K-TV, 2 pack!") == ["men", "4k", "tv", "2", "pack"]


def test_score_by_hand() -> None:
    bm = BM25(["apple banana", "apple", "cherry"])
    # N = 3, df(banana) = 1, doc 0 has length 2 against an average of 4/3.
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    expected = idf * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / (4 / 3)))
    np.testing.assert_allclose(bm.scores("banana"), [expected, 0.0, 0.0])
    np.testing.assert_allclose(bm.scores("durian"), 0.0)


def test_class_name_with_the_query_words_wins() -> None:
    bm = BM25(CLASSES)
    top = bm.top_k("accent chair", 3)
    assert top[0] == 0  # both words
    assert top[1] == 2  # "chair" only
    assert bm.top_k("storage bench", 1)[0] == 4
    assert bm.top_k("wall shelf", 1)[0] == 5
    assert bm.top_k("accessory for the bath", 1)[0] == 3


def test_shorter_document_wins_on_equal_term_frequency() -> None:
    bm = BM25(["chair with a very long descriptive title", "chair", "table"])
    s = bm.scores("chair")
    assert s[1] > s[0] > 0 == s[2]


def test_rare_word_outweighs_common_word() -> None:
    bm = BM25(["red lamp", "red rug", "red vase", "blue lamp"])
    # "blue" occurs once, "red" three times: the blue lamp beats the red ones.
    assert bm.top_k("blue red lamp", 1)[0] == 3


def test_top_k_ties_broken_by_index_and_k_clamped() -> None:
    bm = BM25(["sofa", "lamp", "sofa", "sofa"])
    np.testing.assert_array_equal(bm.top_k("sofa", 3), [0, 2, 3])
    np.testing.assert_array_equal(bm.top_k("nothing matches", 10), [0, 1, 2, 3])
    assert len(bm.top_k("sofa", 0)) == 0


def _reference_scores(docs: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Textbook BM25, one document at a time."""
    toks = [tokenize(d) for d in docs]
    avg = sum(len(t) for t in toks) / len(toks)
    out = []
    for t in toks:
        tf = Counter(t)
        score = 0.0
        for term in set(tokenize(query)):
            df = sum(term in other for other in toks)
            if tf[term]:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(t) / avg))
        out.append(score)
    return np.array(out)


def test_matches_plain_loop_reference() -> None:
    rng = np.random.default_rng(0)
    vocab = ["oak", "desk", "desks", "lamp", "lamps", "black", "white", "chair", "bench", "benches", "rug"]
    docs = [" ".join(rng.choice(vocab, rng.integers(1, 7))) for _ in range(60)]
    bm = BM25(docs, k1=1.5, b=0.6)
    for query in ["oak desk", "black lamps", "white bench rug", "chair chair"]:
        np.testing.assert_allclose(bm.scores(query), _reference_scores(docs, query, 1.5, 0.6), rtol=1e-12)
