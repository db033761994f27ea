"""A bounded LRU of whole responses, keyed on the normalized query, the call's parameters and the bundle
version (so a new bundle never answers from the old one's entries). Search traffic is skewed: a few
head queries make most calls, and those skip featurization and inference entirely."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from server import metrics, tracing


class ResponseCache:
    def __init__(self, size: int, method: str) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._hits = metrics.CACHE_REQUESTS.labels(method=method, result="hit")
        self._misses = metrics.CACHE_REQUESTS.labels(method=method, result="miss")

    def get(self, key: Hashable) -> Any | None:
        if not self.size:
            return None
        value = self._entries.get(key)
        tracing.annotate(cache_hit=value is not None)
        if value is None:
            self._misses.inc()
            return None
        self._entries.move_to_end(key)
        self._hits.inc()
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if not self.size:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
