"""Search and EmbedQuery over the bundle's product index."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from server import metrics, timing
from server.bundle import Bundle
from server.errors import InvalidArgument, NotFound
from server.runtime.index import RowFilter
from server.runtime.search import search
from server.service.cache import ResponseCache
from server.service.heavy import HeavyWork
from server.service.store import BundleStore
from server.service.validation import (
    Limits,
    check_count,
    check_id,
    check_items,
    check_text,
    check_vector,
    shown,
)


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


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One item of a batch: Search's request fields (a query text or a raw vector)."""

    query: str | None = None
    vector: list[float] | None = None
    k: int = 0
    category: str = ""
    mode: str = ""


@dataclass(frozen=True, slots=True)
class _CheckedSearch:
    mode: str
    k: int
    query: str | None  # the text, checked; None for a raw vector
    vector: np.ndarray | None  # the raw vector normalized, or (once embedded) the text's vector
    rows: RowFilter | None


class RetrievalService:
    def __init__(
        self, store: BundleStore, limits: Limits, cache_size: int = 0, heavy: HeavyWork | None = None
    ) -> None:
        self._store = store
        self._limits = limits
        self._heavy = heavy or HeavyWork()
        # Query vectors, shared by Search and EmbedQuery; the index search itself is cheap.
        self._cache = ResponseCache(cache_size, "query_vector")

    async def embed(self, query: str, deadline: float | None = None) -> EmbedResult:
        bundle = self._store.bundle
        bundle.require("retrieval")
        query = check_text(query, "query", self._limits.max_query_chars)
        return EmbedResult(
            (await self._embed_cached(bundle, [query], deadline, "EmbedQuery"))[0], bundle.version
        )

    async def embed_batch(self, queries: list[str], deadline: float | None = None) -> list[EmbedResult]:
        """Every query checked as EmbedQuery checks it (the first bad one refuses the whole batch, named
        `items[i].query`), then one model run for the queries not cached; vectors in query order."""
        bundle = self._store.bundle
        bundle.require("retrieval")
        limits = self._limits
        checked = check_items(
            queries, limits.max_batch_items, lambda q: check_text(q, "query", limits.max_query_chars)
        )
        vectors = await self._embed_cached(bundle, checked, deadline, "EmbedQuery")
        return [EmbedResult(vector, bundle.version) for vector in vectors]

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
        item = self._check(bundle, SearchQuery(query, vector, k, category, mode))
        return (await self._answer(bundle, [item], deadline))[0]

    async def search_batch(
        self, items: list[SearchQuery], deadline: float | None = None
    ) -> list[SearchResult]:
        """Every item checked as Search checks it (the first bad one refuses the whole batch, named
        `items[i]`), then one model run embeds the texts that dense and hybrid items need; answers in item
        order."""
        bundle = self._store.bundle
        bundle.require("retrieval")
        checked = check_items(items, self._limits.max_batch_items, lambda item: self._check(bundle, item))
        return await self._answer(bundle, checked, deadline)

    def _check(self, bundle: Bundle, item: SearchQuery) -> _CheckedSearch:
        k = check_count(item.k, "k", self._limits.default_k, self._limits.max_k)
        mode = _check_mode(bundle, item.mode, item.vector is not None)
        query, vector = None, None
        if item.vector is not None:
            vector = check_vector(item.vector, "vector", bundle.embedding_dim)
        elif item.query is not None:
            query = check_text(item.query, "query", self._limits.max_query_chars)
        else:
            raise InvalidArgument("query", "set query or vector")
        k = min(k, len(bundle.products.ids))
        rows = _category_rows(bundle, check_id(item.category, "category")) if item.category else None
        return _CheckedSearch(mode, k, query, vector, rows)

    async def _answer(
        self, bundle: Bundle, items: list[_CheckedSearch], deadline: float | None
    ) -> list[SearchResult]:
        # Texts searched densely or hybrid need their vector: all of them in one model run.
        texts = [i for i, item in enumerate(items) if item.vector is None and item.mode != "lexical"]
        if texts:
            queries = [items[i].query for i in texts]
            vectors = await self._embed_cached(bundle, queries, deadline, "Search")  # type: ignore[arg-type]
            for i, vector in zip(texts, vectors, strict=True):
                items[i] = replace(items[i], vector=vector)
        products = bundle.products
        results = []
        for item in items:
            keys, scores = search(
                item.mode,
                bundle.index,
                bundle.lexical,
                bundle.lexical_spec,
                item.vector,
                item.query,
                item.k,
                item.rows,
            )
            hits = [
                SearchHit(products.ids[row], score, bundle.labels[products.categories[row]].id)
                for row, score in zip(keys.tolist(), scores.tolist(), strict=True)
            ]
            results.append(SearchResult(hits, bundle.version))
        return results

    async def _embed_cached(
        self, bundle: Bundle, queries: list[str], deadline: float | None, method: str
    ) -> list[np.ndarray]:
        """The queries' vectors, those not cached from one model run; the featurization is timed under
        `method`, the call that asked for them."""
        start = time.perf_counter()
        vectors: list[np.ndarray | None] = [None] * len(queries)
        keys = [(bundle.version, query) for query in queries]
        for i, key in enumerate(keys):
            vectors[i] = self._cache.get(key)
        todo = [i for i, vector in enumerate(vectors) if vector is None]
        if todo:
            model, featurize = bundle.query_model()
            ids = featurize([queries[i] for i in todo])
            took = time.perf_counter() - start
            metrics.FEATURIZE_DURATION.labels(method=method).observe(took)
            timing.add("featurize", took)
            rows = await model.infer(ids, deadline, offload=self._heavy.offload(len(todo), model))
            for i, row in zip(todo, rows, strict=True):
                vectors[i] = row
                self._cache.put(keys[i], row)
        return vectors  # type: ignore[return-value]  # every query has its vector now


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
