"""ClassifyIntent: the golden rule first (a query that names a category exactly, mined at training time and
read from the bundle's rules.json), then the intent model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from server import metrics, timing
from server.service.cache import ResponseCache
from server.service.store import BundleStore
from server.service.validation import Limits, check_count, check_probability, check_text

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


class IntentService:
    def __init__(self, store: BundleStore, limits: Limits, cache_size: int = 0) -> None:
        self._store = store
        self._limits = limits
        self._cache = ResponseCache(cache_size, "ClassifyIntent")
        self._featurize_seconds = metrics.FEATURIZE_DURATION.labels(method="ClassifyIntent")

    async def classify(
        self, query: str, top_k: int, min_score: float, deadline: float | None = None
    ) -> IntentResult:
        bundle = self._store.bundle
        bundle.require("intent")
        query = check_text(query, "query", self._limits.max_query_chars)
        top_k = check_count(top_k, "top_k", self._limits.default_top_k, len(bundle.labels))
        min_score = check_probability(min_score, "min_score")

        start = time.perf_counter()
        words = bundle.featurizer.words(query)
        normalized = " ".join(words)
        key = (bundle.version, normalized, top_k, min_score)
        if (cached := self._cache.get(key)) is not None:
            return cached
        ids = bundle.featurizer.ids_of_words([words])
        took = time.perf_counter() - start
        self._featurize_seconds.observe(took)
        timing.add("featurize", took)

        rule_label = bundle.rules.intent_queries.get(normalized)
        if rule_label is not None:
            # A precise rule is certain: it answers with its one category.
            probs = np.zeros(len(bundle.labels), dtype=np.float32)
            probs[rule_label] = 1.0
            order, source, rule = np.array([rule_label]), SOURCE_RULE, "exact_query"
        else:
            probs = (await bundle.intent.infer(ids, deadline))[0]
            order, source, rule = np.argsort(-probs, kind="stable")[:top_k], SOURCE_MODEL, ""
        labels = bundle.labels
        categories = [
            CategoryScore(labels[i].id, labels[i].path, p)
            for i, p in zip(order.tolist(), probs[order].tolist(), strict=True)
            if p >= min_score
        ]
        result = IntentResult(categories, source, rule, bundle.version)
        self._cache.put(key, result)
        return result
