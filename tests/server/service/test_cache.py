"""The response cache: bounded LRU, off at size 0, hits and misses counted."""

from __future__ import annotations

from prometheus_client import REGISTRY

from server.service.cache import ResponseCache


def _count(method: str, result: str) -> float:
    value = REGISTRY.get_sample_value("sift_cache_requests_total", {"method": method, "result": result})
    return value or 0.0


def test_lru_evicts_the_least_recently_used_and_counts() -> None:
    cache = ResponseCache(2, "test_lru")
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None and cache.get("c") == 3 and len(cache) == 2
    assert _count("test_lru", "hit") == 2 and _count("test_lru", "miss") == 1


def test_size_zero_is_off_and_counts_nothing() -> None:
    cache = ResponseCache(0, "test_off")
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
    assert _count("test_off", "miss") == 0
