"""Per-call time breakdown (featurization, queue, inference), for Prometheus and for the response.

The transport opens a breakdown for each call; code below it adds to whichever breakdown is open in its
asyncio task (a context variable), so services and runtimes need no extra argument, and code called
outside a call (training, warm-up) adds to nothing.
"""

from __future__ import annotations

from contextvars import ContextVar

from server import tracing

PARTS = ("featurize", "queue", "inference")
_current: ContextVar[dict[str, float] | None] = ContextVar("sift_timing", default=None)


def open_breakdown() -> dict[str, float]:
    breakdown = dict.fromkeys(PARTS, 0.0)
    _current.set(breakdown)
    return breakdown


def add(part: str, seconds: float) -> None:
    if part == "featurize":  # model runs have their own span, with the model's name (runtime/onnx.py)
        tracing.record(part, seconds)
    breakdown = _current.get()
    if breakdown is not None:
        breakdown[part] += seconds


def as_metadata(breakdown: dict[str, float], total: float) -> tuple[tuple[str, str], ...]:
    """Trailing metadata in microseconds, as TEI sends its timing headers: sift-featurize-us, ..."""
    return (
        *((f"sift-{part}-us", str(round(seconds * 1e6))) for part, seconds in breakdown.items()),
        ("sift-total-us", str(round(total * 1e6))),
    )
