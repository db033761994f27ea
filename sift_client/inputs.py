"""What a caller passes in: batch items and relevance candidates, as plain dataclasses. Every field means
what the request message's field of the same name means (protos/sift/v1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IntentQuery:
    """One ClassifyIntent: `top_k` 0 is the server's default (5); `min_score` in [0, 1]."""

    query: str
    top_k: int = 0
    min_score: float = 0.0


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One Search, by `query` text or by a raw `vector` (one of them). `k` 0 is the server's default (10);
    `category` an id or path prefix; `mode` "dense", "lexical", "hybrid" or "" for the bundle's default."""

    query: str | None = None
    vector: Sequence[float] | None = None
    k: int = 0
    category: str = ""
    mode: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A ScoreRelevance candidate: a `product_id` the bundle knows, or any product `title`."""

    product_id: str = ""
    title: str = ""
