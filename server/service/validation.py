"""Request checks shared by the services; each names the field it rejects."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from server.errors import InvalidArgument, NotFound

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Limits:
    max_query_chars: int = 512
    max_candidates: int = 1000
    max_k: int = 1000
    default_top_k: int = 5
    default_k: int = 10
    max_batch_items: int = 64


MAX_ID_CHARS = 256
"""Longest product id or category accepted; ids are short keys, so longer ones are refused unread."""


def shown(value: str, limit: int = 60) -> str:
    """A client's value as quoted in an error message: cut short, so a huge or hostile input never ends
    up whole in a status message (which travels in HTTP/2 trailers) or a log line."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


def check_id(value: str, field: str) -> str:
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"has {len(value)} characters, more than the limit of {MAX_ID_CHARS}")
    return value


def check_text(value: str, field: str, max_chars: int) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > max_chars:
        raise InvalidArgument(field, f"has {len(value)} characters, more than the limit of {max_chars}")
    return text


def check_count(value: int, field: str, default: int, maximum: int) -> int:
    """0 means the default; otherwise 1..maximum."""
    if value == 0:
        return min(default, maximum)
    if value < 0 or value > maximum:
        raise InvalidArgument(
            field, f"must be between 1 and {maximum} (0 for the default {default}), got {value}"
        )
    return value


def check_probability(value: float, field: str) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidArgument(field, f"must be in [0, 1], got {value}")
    return value


def check_vector(values: list[float], field: str, dim: int) -> np.ndarray:
    """A finite, non-zero vector of the bundle's dimension, returned L2-normalized."""
    if len(values) != dim:
        raise InvalidArgument(
            field, f"must have {dim} values (the bundle's embedding_dim), got {len(values)}"
        )
    vector = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vector).all():
        raise InvalidArgument(field, "must hold only finite numbers (no NaN or infinity)")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise InvalidArgument(field, "must not be the zero vector")
    return vector / norm


def check_items(items: Sequence[T], maximum: int, check: Callable[[T], U]) -> list[U]:
    """A batch call's 1 to `maximum` items, each checked by `check`, the single call's own checks: the first
    refusal names the item's field (`items[3].query: ...`), so a batch item is checked by exactly the code
    that checks a single call."""
    if not items:
        raise InvalidArgument("items", "must hold at least one item")
    if len(items) > maximum:
        raise InvalidArgument("items", f"has {len(items)} entries, more than the limit of {maximum}")
    checked = []
    for index, item in enumerate(items):
        try:
            checked.append(check(item))
        except (InvalidArgument, NotFound) as e:
            raise type(e)(f"items[{index}].{e.field}", e.problem) from None
    return checked
