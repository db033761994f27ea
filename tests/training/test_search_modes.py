"""Search's default mode: chosen on dev by both held-out measures, title substrings and similar products."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.manifest import LexicalComponent
from training.retrieval import write_index
from training.search_modes import MODES, SimilarProducts, _similar_precision, build_lexical, choose_mode

N = 30
TITLES = [f"{chr(97 + i % 26)}{chr(97 + i // 26)}x item{i}" for i in range(N)]
CATEGORIES = np.arange(N) % 3


@pytest.fixture
def catalogue(tmp_path: Path):
    """Product vectors cluster by category (ten products each); no two titles share a word, so BM25 finds only
    the product a title is from, and the dense index only its category."""
    rng = np.random.default_rng(0)
    vectors = np.eye(8, dtype=np.float32)[CATEGORIES] + 0.05 * rng.standard_normal((N, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = write_index(vectors[:, None, :], tmp_path / "index.usearch")
    lexical, names = build_lexical(TITLES, tmp_path)
    return vectors, index, lexical, names


def test_similar_precision_skips_the_query_product(catalogue) -> None:
    vectors, index, lexical, names = catalogue
    similar = SimilarProducts(TITLES, vectors, np.arange(N), CATEGORIES)
    fusion = LexicalComponent(*names)
    # Dense: nine of the category's other products, then one of another (the product itself is skipped).
    assert _similar_precision("dense", similar, index, lexical, fusion) == pytest.approx([0.9] * N)
    # BM25: a whole title matches only its own product, which is skipped.
    assert _similar_precision("lexical", similar, index, lexical, fusion) == pytest.approx([0.0] * N)


def test_default_is_the_best_mean_of_both_measures_on_dev(catalogue) -> None:
    vectors, index, lexical, names = catalogue
    # Substring queries (the first word of each title) whose vectors point nowhere: only BM25 finds them.
    texts = [t.split()[0] for t in TITLES]
    noise = np.random.default_rng(1).standard_normal((N, 8)).astype(np.float32)
    similar = SimilarProducts(TITLES, vectors, np.arange(N), CATEGORIES)
    component, result = choose_mode(texts, noise, np.arange(N), similar, index, lexical, names, seed=0)

    assert result["default_mode"] == component.default_mode
    scores = {m: result[m]["dev"]["score"] for m in MODES}
    assert scores[component.default_mode] == max(scores.values())
    for mode in MODES:
        dev = result[mode]["dev"]
        assert dev["score"] == pytest.approx(
            (dev["recall_at_10"] + dev["similar_precision_at_10"]["precision_at_10"]) / 2, abs=1e-4
        )
    assert result["lexical"]["dev"]["recall_at_10"] == 1.0
    assert result["lexical"]["dev"]["similar_precision_at_10"]["precision_at_10"] == 0.0
    assert result["dense"]["dev"]["similar_precision_at_10"]["precision_at_10"] == pytest.approx(0.9)
    # At a dense weight of at most 1, BM25's single exact hit stays in the top 10 and the dense neighbours
    # fill the rest: hybrid gets both measures right, so it beats either mode alone.
    assert component.default_mode == "hybrid"
    assert component.dense_weight <= 1.0
    assert result["hybrid"]["dev"]["score"] == pytest.approx(0.95)
    assert result["similar_dev"] + result["similar_test"] == N
