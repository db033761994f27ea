"""A micro-batcher in front of one model: calls that arrive together share one model run.

Model code never sees it: callers await `batcher(rows, deadline)` and get their own rows' outputs back.
- Bounded queue: when `max_queue` rows wait already, a call is refused at once (QueueFull).
- Batches: up to `max_batch` rows; the first waiting call waits at most `max_wait_us` for company, and not
  at all when 0 (the default: what queued while the previous batch ran forms the next one).
- Deadlines: a call whose deadline has passed is dropped before it runs (DeadlineExpired), and a call that
  the learned cost model says cannot finish in time is shed at once, before it queues (DeadlineUnmeetable).
- A caller that goes away (its task cancelled, as grpc.aio does when the client cancels) is skipped.
- The cost model fits batch time = a*n + b by least squares with exponential forgetting, from the batches
  it has run, so shedding follows the machine as it is now.
The refusals are kinds of server/errors.py, so the transport maps them to statuses with every other error.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from server.errors import DeadlineExceeded, ResourceExhausted


class QueueFull(ResourceExhausted):
    """The batcher's queue is at its bound."""

    names_method = True


class DeadlineExpired(DeadlineExceeded):
    """The call's deadline passed while it waited."""

    names_method = True


class DeadlineUnmeetable(DeadlineExceeded):
    """The cost model says the call cannot finish before its deadline."""

    names_method = True


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 32
    max_wait_us: int = 0
    max_queue: int = 1024


class CostModel:
    """Batch time ~ a*n + b, fitted by recursive least squares with forgetting factor `decay`."""

    def __init__(self, decay: float = 0.99) -> None:
        self.decay = decay
        # Weighted sums of 1, n, n^2, t, n*t over the batches seen.
        self._s = np.zeros(5)

    def observe(self, n: int, seconds: float) -> None:
        self._s = self.decay * self._s + np.array([1.0, n, n * n, seconds, n * seconds])

    @property
    def coefficients(self) -> tuple[float, float]:
        """(a, b): seconds per row and fixed seconds per batch; (0, 0) before any batch is seen."""
        w, sn, snn, st, snt = self._s
        if w == 0:
            return 0.0, 0.0
        det = w * snn - sn * sn
        if det <= 1e-12 * max(w * snn, 1.0):  # every batch had the same size: all cost is per row
            return st / sn if sn else 0.0, 0.0
        a = (w * snt - sn * st) / det
        b = (st - a * sn) / w
        return max(a, 0.0), max(b, 0.0)

    def predict(self, n: int) -> float:
        a, b = self.coefficients
        return a * n + b


@dataclass
class _Call:
    rows: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, float]]
    deadline: float | None  # time.monotonic() seconds
    enqueued: float


class Batcher:
    """Batches calls to `run` (rows -> outputs, row for row). `combine` stacks the waiting calls' inputs
    (for example padding id rows to one width). Must be used from one event loop."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        policy: BatchPolicy,
        combine: Callable[[list[np.ndarray]], np.ndarray] = np.concatenate,
        on_batch: Callable[[int, float, float], None] | None = None,
    ) -> None:
        self._run = run
        self._combine = combine
        self.policy = policy
        self.cost = CostModel()
        self._queue: deque[_Call] = deque()
        self._queued_rows = 0
        self._worker: asyncio.Task[None] | None = None
        self._on_batch = on_batch  # (rows, seconds queued by the oldest call, seconds running)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def estimated_finish(self, rows: int) -> float:
        """When a call of `rows` rows arriving now should finish: the queue ahead, then its own batch."""
        ahead = self._queued_rows
        batches_ahead = -(-ahead // self.policy.max_batch)
        wait = batches_ahead * self.cost.predict(self.policy.max_batch) if ahead else 0.0
        return time.monotonic() + wait + self.policy.max_wait_us / 1e6 + self.cost.predict(rows)

    async def __call__(self, rows: np.ndarray, deadline: float | None = None) -> np.ndarray:
        return (await self.run_timed(rows, deadline))[0]

    async def run_timed(self, rows: np.ndarray, deadline: float | None = None) -> tuple[np.ndarray, float]:
        """The outputs for `rows`, and the seconds the model run that computed them took."""
        if self._queued_rows + len(rows) > self.policy.max_queue:
            raise QueueFull(f"{self._queued_rows} rows already queued (max_queue {self.policy.max_queue})")
        if deadline is not None:
            finish = self.estimated_finish(len(rows))
            if finish > deadline:
                left = (deadline - time.monotonic()) * 1000
                need = (finish - time.monotonic()) * 1000
                raise DeadlineUnmeetable(f"needs ~{need:.1f} ms, {left:.1f} ms left before the deadline")
        future: asyncio.Future[tuple[np.ndarray, float]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(rows, future, deadline, time.monotonic()))
        self._queued_rows += len(rows)
        if self._worker is None or self._worker.done():
            # A fresh context: the worker serves every caller, so it must not run in the first one's.
            self._worker = asyncio.create_task(self._work(), context=contextvars.Context())
        return await future

    def _take(self) -> list[_Call]:
        """Pops up to max_batch rows of live calls (one larger call goes alone); expired and abandoned
        calls are settled and dropped on the way."""
        batch: list[_Call] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            n = len(self._queue[0].rows)
            if batch and rows + n > self.policy.max_batch:
                break
            call = self._queue.popleft()
            self._queued_rows -= n
            if call.future.done():  # the caller went away
                continue
            if call.deadline is not None and now > call.deadline:
                call.future.set_exception(DeadlineExpired("deadline passed while queued"))
                continue
            batch.append(call)
            rows += n
            if rows >= self.policy.max_batch:
                break
        return batch

    async def _work(self) -> None:
        while self._queue:
            if self.policy.max_wait_us and self._queued_rows < self.policy.max_batch:
                await asyncio.sleep(self.policy.max_wait_us / 1e6)
            else:
                await asyncio.sleep(0)  # let handlers already scheduled join this batch
            batch = self._take()
            if not batch:
                continue
            inputs = self._combine([c.rows for c in batch])
            start = time.monotonic()
            try:
                outputs = self._run(inputs)
            except Exception as e:  # every caller of the batch gets the model's error
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(e)
                continue
            took = time.monotonic() - start
            self.cost.observe(len(inputs), took)
            if self._on_batch:
                self._on_batch(len(inputs), start - batch[0].enqueued, took)
            offset = 0
            for call in batch:
                n = len(call.rows)
                if not call.future.done():
                    call.future.set_result((outputs[offset : offset + n], took))
                offset += n
