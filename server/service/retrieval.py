"""Search and EmbedQuery over the bundle's product index."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from server import metrics, timing
from server.bundle import Bundle
from server.errors import InvalidArgument, NotFound
from server.runtime.index import RowFilter
from server.runtime.search import search
from server.service.cache import ResponseCache
from server.service.store import BundleStore
from server.service.validation import Limits, check_count, check_id, check_text, check_vector, shown


@dataclass(frozen=True, slots=True)
class SearchHit:
    product_id: str
    score: float
    category: str


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[SearchHit]
    model_version: str


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vector: np.ndarray
    model_version: str


class RetrievalService:
    def __init__(self, store: BundleStore, limits: Limits, cache_size: int = 0) -> None:
        self._store = store
        self._limits = limits
        # Query vectors, shared by Search and EmbedQuery; the index search itself is cheap.
        self._cache = ResponseCache(cache_size, "query_vector")

    async def embed(self, query: str, deadline: float | None = None) -> EmbedResult:
        bundle = self._store.bundle
        bundle.require("retrieval")
        query = check_text(query, "query", self._limits.max_query_chars)
        return EmbedResult(await self._embed_cached(bundle, query, deadline, "EmbedQuery"), bundle.version)

    async def search(
        self,
        query: str | None,
        vector: list[float] | None,
        k: int,
        category: str,
        mode: str = "",
        deadline: float | None = None,
    ) -> SearchResult:
        bundle = self._store.bundle
        bundle.require("retrieval")
        k = check_count(k, "k", self._limits.default_k, self._limits.max_k)
        mode = _check_mode(bundle, mode, vector is not None)
        if vector is not None:
            query_vector = check_vector(vector, "vector", bundle.embedding_dim)
        elif query is not None:
            query = check_text(query, "query", self._limits.max_query_chars)
            query_vector = (
                None if mode == "lexical" else await self._embed_cached(bundle, query, deadline, "Search")
            )
        else:
            raise InvalidArgument("query", "set query or vector")
        k = min(k, len(bundle.products.ids))
        rows = _category_rows(bundle, check_id(category, "category")) if category else None
        keys, scores = search(
            mode, bundle.index, bundle.lexical, bundle.lexical_spec, query_vector, query, k, rows
        )
        products = bundle.products
        hits = [
            SearchHit(products.ids[row], score, bundle.labels[products.categories[row]].id)
            for row, score in zip(keys.tolist(), scores.tolist(), strict=True)
        ]
        return SearchResult(hits, bundle.version)

    async def _embed_cached(
        self, bundle: Bundle, query: str, deadline: float | None, method: str
    ) -> np.ndarray:
        """The query's vector; its featurization is timed under `method`, the call that asked for it."""
        start = time.perf_counter()
        key = (bundle.version, query)
        if (cached := self._cache.get(key)) is not None:
            return cached
        model, featurize = bundle.query_model()
        ids = featurize([query])
        took = time.perf_counter() - start
        metrics.FEATURIZE_DURATION.labels(method=method).observe(took)
        timing.add("featurize", took)
        vector = (await model.infer(ids, deadline))[0]
        self._cache.put(key, vector)
        return vector


def _check_mode(bundle: Bundle, mode: str, raw_vector: bool) -> str:
    """The request's mode, or the bundle's default; a raw vector has no words, so it is searched densely."""
    if mode and mode not in bundle.search_modes:
        raise InvalidArgument(
            "mode",
            f"{shown(mode)} is not served by bundle {bundle.version}; it serves {list(bundle.search_modes)}",
        )
    if raw_vector:
        if mode not in ("", "dense"):
            raise InvalidArgument("mode", f"a raw vector is searched densely, not {mode}")
        return "dense"
    return mode or bundle.search_default_mode


def _category_rows(bundle: Bundle, category: str) -> RowFilter:
    """Rows of products in `category` (an id or a path) or any category below it."""
    wanted = category.strip().lower()
    matches = [
        i
        for i, label in enumerate(bundle.labels)
        if label.id == wanted
        or label.id.startswith(wanted + "/")
        or label.path.lower() == wanted
        or label.path.lower().startswith(wanted + " >")
    ]
    if not matches:
        raise NotFound("category", f"no category id or path matches {shown(category)}")
    return bundle.products.category_filter(matches, bundle.index.views)
