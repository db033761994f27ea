"""Request validation, in process against the tiny bundle: each bad input names its field."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from server.bundle import load_bundle
from server.errors import InvalidArgument, NotFound, Unavailable
from server.service.intent import IntentService
from server.service.relevance import CandidateInput, RelevanceService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits, check_count, check_text, check_vector


@pytest.fixture(scope="module")
def store(tiny_bundle: Path) -> BundleStore:
    return BundleStore(load_bundle(tiny_bundle))


T = TypeVar("T")
LIMITS = Limits(max_query_chars=50, max_candidates=5, max_k=20)


def run(call: Coroutine[object, object, T]) -> T:
    """Service methods are coroutines (models may sit behind a batcher); run one to its answer."""
    return asyncio.run(call)


def test_check_text() -> None:
    assert check_text("  oak  ", "query", 10) == "oak"
    with pytest.raises(InvalidArgument, match="query: must not be empty"):
        check_text(" \t ", "query", 10)
    with pytest.raises(InvalidArgument, match="query: has 11 characters"):
        check_text("x" * 11, "query", 10)


def test_check_count() -> None:
    assert check_count(0, "k", 10, 100) == 10
    assert check_count(0, "k", 10, 3) == 3
    assert check_count(7, "k", 10, 100) == 7
    for bad in (-1, 101):
        with pytest.raises(InvalidArgument, match="k: must be between 1 and 100"):
            check_count(bad, "k", 10, 100)


def test_check_vector() -> None:
    v = check_vector([3.0, 4.0], "vector", 2)
    np.testing.assert_allclose(v, [0.6, 0.8])
    for bad, message in (
        ([1.0], "must have 2 values"),
        ([math.nan, 1.0], "must hold only finite"),
        ([0.0, 0.0], "must not be the zero"),
    ):
        with pytest.raises(InvalidArgument, match=f"vector: {message}"):
            check_vector(bad, "vector", 2)


def test_no_bundle_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        run(IntentService(BundleStore(), LIMITS).classify("oak", 1, 0))


def test_intent_validation(store: BundleStore) -> None:
    service = IntentService(store, LIMITS)
    with pytest.raises(InvalidArgument, match="^query:"):
        run(service.classify("", 1, 0))
    with pytest.raises(InvalidArgument, match="^query: has 51"):
        run(service.classify("x" * 51, 1, 0))
    with pytest.raises(InvalidArgument, match="^top_k:"):
        run(service.classify("oak", -1, 0))
    with pytest.raises(InvalidArgument, match="^top_k:"):
        run(service.classify("oak", 10_000, 0))
    with pytest.raises(InvalidArgument, match="^min_score:"):
        run(service.classify("oak", 1, 1.5))
    result = run(service.classify("oak", 0, 0))
    assert len(result.categories) == 5
    assert math.isclose(
        sum(c.probability for c in run(service.classify("oak", len(store.bundle.labels), 0)).categories),
        1,
        rel_tol=1e-3,
    )


def test_relevance_validation(store: BundleStore) -> None:
    service = RelevanceService(store, LIMITS)
    known = store.bundle.products.ids[0]
    with pytest.raises(InvalidArgument, match="^candidates: must hold"):
        run(service.score("oak", []))
    with pytest.raises(InvalidArgument, match="^candidates: has 6 entries"):
        run(service.score("oak", [CandidateInput(product_id=known)] * 6))
    with pytest.raises(NotFound, match=r"^candidates\[1\].product_id: unknown product id 'P-nope'"):
        run(service.score("oak", [CandidateInput(product_id=known), CandidateInput(product_id="P-nope")]))
    with pytest.raises(InvalidArgument, match=r"^candidates\[0\]: set product_id or title"):
        run(service.score("oak", [CandidateInput()]))
    with pytest.raises(InvalidArgument, match=r"^candidates\[0\].title: must not be empty"):
        run(service.score("oak", [CandidateInput(title="   ")]))


def test_retrieval_validation(store: BundleStore) -> None:
    service = RetrievalService(store, LIMITS)
    with pytest.raises(InvalidArgument, match="^k:"):
        run(service.search("oak", None, 21, ""))
    with pytest.raises(InvalidArgument, match="^query: set query or vector"):
        run(service.search(None, None, 5, ""))
    with pytest.raises(InvalidArgument, match="^vector: must have 384 values"):
        run(service.search(None, [1.0, 2.0], 5, ""))
    with pytest.raises(NotFound, match="^category:"):
        run(service.search("oak", None, 5, "no/such/category"))
    with pytest.raises(InvalidArgument, match="^query:"):
        run(service.embed(""))


def test_exact_search_over_no_rows(store: BundleStore) -> None:
    """A category filter that matches no product gives no hits, not an error."""
    no_rows = np.zeros(0, dtype=np.int64)
    rows, scores = store.bundle.index.exact_search(np.ones(384, dtype=np.float32), no_rows, 5)
    assert len(rows) == 0 and len(scores) == 0
