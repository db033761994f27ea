"""Batch calls in process against the tiny bundle: answers in item order, one model run for the whole batch,
each item checked by the single call's checks with its refusal naming the item."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from server.admission import Admission, AdmissionPolicy, Work
from server.bundle import Bundle, load_bundle
from server.errors import InvalidArgument, NotFound
from server.service.intent import IntentQuery, IntentService
from server.service.retrieval import RetrievalService, SearchQuery
from server.service.store import BundleStore
from server.service.validation import Limits

T = TypeVar("T")
LIMITS = Limits(max_query_chars=50, max_k=20, max_batch_items=4)
QUERIES = ["oak coffee table", "velvet accent chair", "blue outdoor rug"]


def run(call: Coroutine[object, object, T]) -> T:
    return asyncio.run(call)


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return load_bundle(tiny_bundle)


@pytest.fixture
def model_runs(bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Rows of every model run, by model name, while the test runs."""
    runs: dict[str, list[int]] = {}
    for model in (bundle.intent, bundle.query_student, bundle.query_encoder):
        original: Callable[[dict[str, np.ndarray]], np.ndarray] = model.run

        def counted(inputs: dict[str, Any], original=original, name=model.name) -> np.ndarray:
            runs.setdefault(name, []).append(len(next(iter(inputs.values()))))
            return original(inputs)

        monkeypatch.setattr(model, "run", counted)
    return runs


def test_intent_batch_is_one_model_run_in_item_order(
    bundle: Bundle, model_runs: dict[str, list[int]]
) -> None:
    service = IntentService(BundleStore(bundle), LIMITS)
    items = [IntentQuery(QUERIES[0], 3), IntentQuery("Area Rugs"), IntentQuery(QUERIES[1], 2, 0.001)]
    results = run(service.classify_batch([*items, IntentQuery(QUERIES[2])]))
    # The rule answers "Area Rugs"; the model sees the other three, in one run.
    assert model_runs == {"intent": [3]}
    assert [r.source for r in results] == ["model", "rule", "model", "model"]
    assert [len(r.categories) for r in results[:1]] == [3] and len(results[2].categories) <= 2
    assert results[1].categories[0].id == "rugs/area-rugs" and results[1].rule == "exact_query"
    for item, batched in zip(items, results, strict=False):
        single = run(service.classify(item.query, item.top_k, item.min_score))
        assert [c.id for c in batched.categories][:1] == [c.id for c in single.categories][:1]
        # int8 models scale activations per run (DynamicQuantizeLinear): a batch's companions move an
        # item's probabilities slightly, as the micro-batcher's do.
        for b, s in zip(batched.categories, single.categories, strict=False):
            assert abs(b.probability - s.probability) < 0.02
        assert batched.model_version == bundle.version


def test_search_batch_embeds_every_text_in_one_run(bundle: Bundle, model_runs: dict[str, list[int]]) -> None:
    service = RetrievalService(BundleStore(bundle), LIMITS)
    category = bundle.labels[0].id.split("/")[0]
    vector = run(service.embed("walnut desk")).vector.tolist()
    model_runs.clear()
    items = [
        SearchQuery(QUERIES[0], k=5, mode="dense"),
        SearchQuery(QUERIES[1], k=5, mode="lexical"),
        SearchQuery(vector=vector, k=3),
        SearchQuery(QUERIES[2], k=4, category=category, mode="hybrid"),
    ]
    results = run(service.search_batch(items))
    assert model_runs == {"query_student": [2]}  # the dense and hybrid texts; lexical and vector need none
    assert [len(r.hits) for r in results] == [5, 5, 3, 4]
    assert all(h.category.startswith(category) for h in results[3].hits)
    # What needs no model answers exactly as the single call does.
    for i in (1, 2):
        single = run(service.search(items[i].query, items[i].vector, items[i].k, "", items[i].mode))
        assert results[i].hits == single.hits
    # The texts' vectors are the ones one run over the same texts gives.
    vectors = run(service.embed_batch([QUERIES[0], QUERIES[2]]))
    by_vector = run(service.search(None, vectors[0].vector.tolist(), 5, ""))
    assert [h.product_id for h in results[0].hits] == [h.product_id for h in by_vector.hits]


def test_embed_batch_matches_single_calls(bundle: Bundle, model_runs: dict[str, list[int]]) -> None:
    service = RetrievalService(BundleStore(bundle), LIMITS)
    batched = run(service.embed_batch(QUERIES))
    assert model_runs == {"query_student": [3]}
    for query, result in zip(QUERIES, batched, strict=True):
        single = run(service.embed(query)).vector
        assert float(np.dot(single, result.vector)) > 0.99  # int8: see the intent test
        assert result.model_version == bundle.version


def test_cached_items_skip_the_model(bundle: Bundle, model_runs: dict[str, list[int]]) -> None:
    service = IntentService(BundleStore(bundle), LIMITS, cache_size=16)
    run(service.classify_batch([IntentQuery(QUERIES[0]), IntentQuery(QUERIES[1])]))
    again = run(service.classify_batch([IntentQuery(QUERIES[1]), IntentQuery(QUERIES[2])]))
    assert model_runs == {"intent": [2, 1]} and len(again) == 2


def test_a_bad_item_refuses_the_batch_naming_it(bundle: Bundle, model_runs: dict[str, list[int]]) -> None:
    store = BundleStore(bundle)
    intent, retrieval = IntentService(store, LIMITS), RetrievalService(store, LIMITS)
    ok, text = IntentQuery("oak"), SearchQuery("oak")
    cases: list[tuple[Coroutine[Any, Any, Any], str]] = [
        (intent.classify_batch([]), r"^items: must hold at least one item$"),
        (intent.classify_batch([ok] * 5), r"^items: has 5 entries, more than the limit of 4$"),
        (intent.classify_batch([ok, IntentQuery(" ")]), r"^items\[1\]\.query: must not be empty"),
        (intent.classify_batch([IntentQuery("oak", -1)]), r"^items\[0\]\.top_k: must be between"),
        (intent.classify_batch([ok, ok, IntentQuery("oak", 0, 2.0)]), r"^items\[2\]\.min_score: must be"),
        (retrieval.search_batch([SearchQuery("oak", k=21)]), r"^items\[0\]\.k: must be between"),
        (retrieval.search_batch([text, SearchQuery()]), r"^items\[1\]\.query: set query or vector"),
        (retrieval.search_batch([SearchQuery(vector=[1.0])]), r"^items\[0\]\.vector: must have 384"),
        (retrieval.search_batch([SearchQuery("a", mode="fuzzy")]), r"^items\[0\]\.mode: 'fuzzy' is not"),
        (retrieval.embed_batch(["oak", "x" * 51]), r"^items\[1\]\.query: has 51 characters"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            run(call)
    unknown = retrieval.search_batch([text, SearchQuery("b", category="no/such")])
    with pytest.raises(NotFound, match=r"^items\[1\]\.category: no category id or path matches"):
        run(unknown)
    assert model_runs == {}  # every item is checked before anything runs


def test_a_batch_counts_as_its_size_under_admission() -> None:
    """Priced by the single call's cost model: as that many single calls until batches have run alone,
    then by the fit of seconds = a x items + b over both."""
    admission = Admission(AdmissionPolicy(0.1))
    one = Work.of("ClassifyIntent")
    admission.calibrate([(one, 0.001)])
    assert admission.estimate(one.times(32)) == pytest.approx(32 * admission.estimate(one))
    admission.calibrate([(one.times(32), 0.004)])
    assert admission.estimate(one) < admission.estimate(one.times(32)) < 32 * admission.estimate(one)
    search = Work.of("Search", dense=3, lexical=2)
    assert search.method == "Search" and search.parts == (("Search/dense", 3), ("Search/lexical", 2))
