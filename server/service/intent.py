"""ClassifyIntent: the golden rule first (a query that names a category exactly, mined at training time and
read from the bundle's rules.json), then the intent model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from server import metrics, timing
from server.bundle import Bundle
from server.service.cache import ResponseCache
from server.service.heavy import HeavyWork
from server.service.store import BundleStore
from server.service.validation import (
    Limits,
    check_count,
    check_items,
    check_probability,
    check_text,
)

SOURCE_MODEL = "model"
SOURCE_RULE = "rule"


@dataclass(frozen=True, slots=True)
class CategoryScore:
    id: str
    path: str
    probability: float


@dataclass(frozen=True, slots=True)
class IntentResult:
    categories: list[CategoryScore]
    source: str
    rule: str
    model_version: str


@dataclass(frozen=True, slots=True)
class IntentQuery:
    """One item of a batch: ClassifyIntent's request fields."""

    query: str
    top_k: int = 0
    min_score: float = 0.0


@dataclass(frozen=True, slots=True)
class _Checked:
    query: str
    top_k: int
    min_score: float


class IntentService:
    def __init__(
        self, store: BundleStore, limits: Limits, cache_size: int = 0, heavy: HeavyWork | None = None
    ) -> None:
        self._store = store
        self._limits = limits
        self._heavy = heavy or HeavyWork()
        self._cache = ResponseCache(cache_size, "ClassifyIntent")
        self._featurize_seconds = metrics.FEATURIZE_DURATION.labels(method="ClassifyIntent")

    async def classify(
        self, query: str, top_k: int, min_score: float, deadline: float | None = None
    ) -> IntentResult:
        bundle = self._store.bundle
        bundle.require("intent")
        item = self._check(bundle, IntentQuery(query, top_k, min_score))
        return (await self._answer(bundle, [item], deadline))[0]

    async def classify_batch(
        self, items: list[IntentQuery], deadline: float | None = None
    ) -> list[IntentResult]:
        """Every item checked as ClassifyIntent checks it (the first bad one refuses the whole batch, named
        `items[i]`), then one model run for the items no rule or cache answers; answers in item order."""
        bundle = self._store.bundle
        bundle.require("intent")
        checked = check_items(items, self._limits.max_batch_items, lambda item: self._check(bundle, item))
        return await self._answer(bundle, checked, deadline)

    def _check(self, bundle: Bundle, item: IntentQuery) -> _Checked:
        return _Checked(
            check_text(item.query, "query", self._limits.max_query_chars),
            check_count(item.top_k, "top_k", self._limits.default_top_k, len(bundle.labels)),
            check_probability(item.min_score, "min_score"),
        )

    async def _answer(
        self, bundle: Bundle, items: list[_Checked], deadline: float | None
    ) -> list[IntentResult]:
        start = time.perf_counter()
        results: list[IntentResult | None] = [None] * len(items)
        todo: list[tuple[int, list[str], tuple]] = []  # (item, its words, its cache key): for the model
        for i, item in enumerate(items):
            words = bundle.featurizer.words(item.query)
            normalized = " ".join(words)
            key = (bundle.version, normalized, item.top_k, item.min_score)
            if (cached := self._cache.get(key)) is not None:
                results[i] = cached
                continue
            rule_label = bundle.rules.intent_queries.get(normalized)
            if rule_label is not None:
                # A precise rule is certain: it answers with its one category.
                probs = np.zeros(len(bundle.labels), dtype=np.float32)
                probs[rule_label] = 1.0
                results[i] = _ranked(bundle, probs, np.array([rule_label]), item.min_score, SOURCE_RULE)
                self._cache.put(key, results[i])
            else:
                todo.append((i, words, key))
        if todo:
            ids = bundle.featurizer.ids_of_words([words for _, words, _ in todo])
            took = time.perf_counter() - start
            self._featurize_seconds.observe(took)
            timing.add("featurize", took)
            offload = self._heavy.offload(len(todo), bundle.intent)
            probs = await bundle.intent.infer(ids, deadline, offload=offload)
            for (i, _, key), row in zip(todo, probs, strict=True):
                order = np.argsort(-row, kind="stable")[: items[i].top_k]
                results[i] = _ranked(bundle, row, order, items[i].min_score, SOURCE_MODEL)
                self._cache.put(key, results[i])
        return results  # type: ignore[return-value]  # every item answered above


def _ranked(
    bundle: Bundle, probs: np.ndarray, order: np.ndarray, min_score: float, source: str
) -> IntentResult:
    labels = bundle.labels
    categories = [
        CategoryScore(labels[i].id, labels[i].path, p)
        for i, p in zip(order.tolist(), probs[order].tolist(), strict=True)
        if p >= min_score
    ]
    return IntentResult(categories, source, "exact_query" if source == SOURCE_RULE else "", bundle.version)
