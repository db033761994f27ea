"""Times each kind of call alone when a bundle is first loaded, to seed admission's cost models
(server/admission.py) before any real call has run alone: each call shape three times through the real
service code over a private store, the fastest run kept (the others met a cold cache or a stray interrupt)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from server.admission import Work
from server.bundle import Bundle
from server.service.heavy import HeavyWork
from server.service.intent import IntentService
from server.service.relevance import CandidateInput, RelevanceService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits

QUERY = "warm up oak coffee table"
SIZES = (1, 100)  # ScoreRelevance candidates: two sizes fit both the per-candidate and the fixed cost
REPEATS = 3


async def measure(bundle: Bundle, limits: Limits, heavy: HeavyWork) -> list[tuple[Work, float]]:
    store = BundleStore(bundle)
    shapes: list[tuple[Work, Callable[[], Awaitable[object]]]] = []
    if "intent" in bundle.capabilities:
        intent = IntentService(store, limits)
        shapes.append((Work.of("ClassifyIntent"), lambda: intent.classify(QUERY, 0, 0.0)))
    if "retrieval" in bundle.capabilities:
        retrieval = RetrievalService(store, limits)
        shapes.append((Work.of("EmbedQuery"), lambda: retrieval.embed(QUERY)))
        for mode in ("", *bundle.search_modes):
            shapes.append(
                (
                    Work.of("Search", **{mode or "default": 1}),
                    lambda mode=mode: retrieval.search(QUERY, None, 0, "", mode),
                )
            )
    if "relevance" in bundle.capabilities:
        relevance = RelevanceService(store, limits, heavy)
        ids = bundle.products.ids if bundle.products else []
        for n in SIZES:
            titles = [CandidateInput(title=f"{QUERY} model {i}") for i in range(n)]
            shapes.append((Work.of("ScoreRelevance", title=n), lambda c=titles: relevance.score(QUERY, c)))
            if len(ids) >= n:
                known = [CandidateInput(product_id=pid) for pid in ids[:n]]
                shapes.append((Work.of("ScoreRelevance", id=n), lambda c=known: relevance.score(QUERY, c)))
    runs = []
    for work, call in shapes:
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            await call()
            best = min(best, time.perf_counter() - start)
        runs.append((work, best))
    return runs
