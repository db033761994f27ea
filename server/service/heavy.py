"""How a call with many rows (ScoreRelevance of hundreds of candidates) shares the worker with cheap calls.

Measured in benchmarks/results/overload-hol (`sift-bench overload --cases hol` with each option as a
variant): Python featurization holds the GIL, so moving it to a thread leaves the event loop waiting for
the GIL; onnxruntime releases it, so model runs on a thread overlap the event loop. Sift does both halves
that pay: featurization in slices on the event loop, yielding between slices, and model runs of many rows
on a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TimedModel(Protocol):
    def expected_seconds(self, rows: int) -> float | None: ...


def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class HeavyWork:
    slice_rows: int = 32
    """Rows featurized between two yields of the event loop; 0 featurizes a call in one go."""
    offload_rows: int = 64
    """Model runs of at least this many rows go to a worker thread; 0 runs every model inline."""
    offload_min_ms: float = 1.0
    """...unless the model is expected to finish them in less than this (server/runtime/onnx.py row_seconds)
    and the event loop has no other call to serve meanwhile: handing a run to the thread and back pays only
    when the loop has other work (benchmarks/results/offload-min). 0 offloads by rows alone."""
    loop_shared: Callable[[], bool] = _always
    """Whether other calls are in flight on the event loop (server/admission.py Admission.loop_shared)."""

    def offload(self, rows: int, model: TimedModel | None = None) -> bool:
        if not 0 < self.offload_rows <= rows:
            return False
        expected = model.expected_seconds(rows) if model is not None else None
        return expected is None or expected * 1e3 >= self.offload_min_ms or self.loop_shared()


# A yield that comes back sooner than this found the event loop with nothing else to do.
IDLE_YIELD_S = 50e-6


class Slices:
    """Maps a function over a call's rows in slices, yielding the event loop between slices; `waited` is the
    time spent yielded (other calls' work), to leave out of the call's own featurization time.

    After a slice that took d seconds, the call yields until other work has had d seconds of the loop or the
    loop is idle: when the loop is contended a heavy call gets at most half of it, so the calls gRPC core
    holds for the loop (new calls to admit or refuse) keep being picked up, and on an idle loop it runs on."""

    def __init__(self, slice_rows: int) -> None:
        self.slice_rows = slice_rows
        self.waited = 0.0

    async def chunks(self, fn: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
        """fn over consecutive slices of `items`, one result per slice."""
        n = self.slice_rows
        if not n or len(items) <= n:
            return [fn(items)]
        out: list[R] = []
        ran = 0.0
        for start in range(0, len(items), n):
            if start:
                await self._share(ran)
            began = time.perf_counter()
            out.append(fn(items[start : start + n]))
            ran = time.perf_counter() - began
        return out

    async def _share(self, ran: float) -> None:
        waited = 0.0
        while waited < ran:
            before = time.perf_counter()
            await asyncio.sleep(0)
            took = time.perf_counter() - before
            waited += took
            if took < IDLE_YIELD_S:
                break
        self.waited += waited

    async def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        parts = await self.chunks(lambda part: [fn(item) for item in part], items)
        return [result for part in parts for result in part]
