"""The micro-batcher's semantics: results in order and correct, batching of concurrent calls, the bounded
queue, deadline drop and shedding, callers that go away, model errors, and the cost model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from server.runtime.batcher import (
    Batcher,
    BatchPolicy,
    CostModel,
    DeadlineExpired,
    DeadlineUnmeetable,
    QueueFull,
)


class Model:
    """Doubles its input and records each batch's size; `delay` blocks like an inline model run."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        return x * 2


def rows(*values: int) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.float32)


def test_each_caller_gets_its_own_rows_back_in_order() -> None:
    async def main() -> None:
        model = Model()
        batcher = Batcher(model, BatchPolicy(max_batch=8))
        outs = await asyncio.gather(*(batcher(rows(i, i + 100)) for i in range(10)))
        for i, out in enumerate(outs):
            assert out.ravel().tolist() == [2 * i, 2 * (i + 100)]
        assert sum(model.batches) == 20 and max(model.batches) <= 8
        assert len(model.batches) < 10  # concurrent calls shared runs

    asyncio.run(main())


def test_a_call_larger_than_max_batch_runs_alone() -> None:
    async def main() -> None:
        model = Model()
        batcher = Batcher(model, BatchPolicy(max_batch=2))
        big, small = await asyncio.gather(batcher(rows(*range(5))), batcher(rows(9)))
        assert big.ravel().tolist() == [0, 2, 4, 6, 8] and small.ravel().tolist() == [18]
        assert model.batches == [5, 1]

    asyncio.run(main())


def test_full_queue_is_refused_at_once() -> None:
    async def main() -> None:
        batcher = Batcher(Model(delay=0.02), BatchPolicy(max_batch=1, max_queue=3))
        tasks = [asyncio.ensure_future(batcher(rows(i))) for i in range(3)]
        await asyncio.sleep(0)  # all three queued (the worker has not run yet)
        with pytest.raises(QueueFull, match="max_queue 3"):
            await batcher(rows(99))
        assert [t.ravel()[0] for t in await asyncio.gather(*tasks)] == [0, 2, 4]

    asyncio.run(main())


def test_expired_calls_are_dropped_before_running() -> None:
    async def main() -> None:
        model = Model(delay=0.05)
        batcher = Batcher(model, BatchPolicy(max_batch=1))
        first = asyncio.ensure_future(batcher(rows(1)))
        await asyncio.sleep(0)
        # Queued behind a 50 ms run with a 10 ms deadline; the cost model knows nothing yet, so it queues.
        late = asyncio.ensure_future(batcher(rows(2), deadline=time.monotonic() + 0.01))
        assert (await first).ravel().tolist() == [2]
        with pytest.raises(DeadlineExpired):
            await late
        assert model.batches == [1]  # the expired call never ran

    asyncio.run(main())


def test_calls_that_cannot_meet_their_deadline_are_shed_at_once() -> None:
    async def main() -> None:
        model = Model(delay=0.03)
        batcher = Batcher(model, BatchPolicy(max_batch=1))
        await batcher(rows(0))  # teaches the cost model: ~30 ms per batch
        busy = [asyncio.ensure_future(batcher(rows(i))) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(DeadlineUnmeetable, match="ms left before the deadline"):
            await batcher(rows(7), deadline=time.monotonic() + 0.05)  # ~3 x 30 ms ahead of it
        assert not any(t.done() for t in busy)  # refused at once, not after waiting in the queue
        await asyncio.gather(*busy)
        assert await batcher(rows(5), deadline=time.monotonic() + 1.0) == pytest.approx(rows(10))

    asyncio.run(main())


def test_a_caller_that_goes_away_is_skipped() -> None:
    async def main() -> None:
        model = Model(delay=0.02)
        batcher = Batcher(model, BatchPolicy(max_batch=1))
        first = asyncio.ensure_future(batcher(rows(1)))
        gone = asyncio.ensure_future(batcher(rows(2)))
        kept = asyncio.ensure_future(batcher(rows(3)))
        await asyncio.sleep(0)
        gone.cancel()
        assert (await first).ravel().tolist() == [2] and (await kept).ravel().tolist() == [6]
        assert gone.cancelled() and model.batches == [1, 1]  # two runs: the cancelled call never ran

    asyncio.run(main())


def test_a_model_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on() -> None:
    def flaky(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ValueError("negative input")
        return x

    async def main() -> None:
        batcher = Batcher(flaky, BatchPolicy(max_batch=4))
        results = await asyncio.gather(batcher(rows(1)), batcher(rows(-1)), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert (await batcher(rows(4))).ravel().tolist() == [4]

    asyncio.run(main())


def test_max_wait_gathers_calls_that_arrive_a_little_apart() -> None:
    async def main() -> None:
        model = Model()
        batcher = Batcher(model, BatchPolicy(max_batch=8, max_wait_us=20_000))

        async def later(i: int) -> np.ndarray:
            await asyncio.sleep(0.002 * i)
            return await batcher(rows(i))

        await asyncio.gather(*(later(i) for i in range(4)))
        assert model.batches == [4]

    asyncio.run(main())


def test_cost_model_recovers_a_linear_cost_and_forgets_old_batches() -> None:
    cost = CostModel(decay=0.9)
    assert cost.predict(10) == 0.0
    for n in (1, 4, 16, 32, 8, 2) * 5:
        cost.observe(n, 0.001 * n + 0.0005)
    a, b = cost.coefficients
    assert a == pytest.approx(0.001, rel=1e-6) and b == pytest.approx(0.0005, rel=1e-6)
    for n in (1, 4, 16, 32, 8, 2) * 30:  # the machine got twice as slow
        cost.observe(n, 0.002 * n + 0.001)
    assert cost.predict(10) == pytest.approx(0.021, rel=0.01)
    same = CostModel()
    same.observe(4, 0.004)
    assert same.coefficients == (0.001, 0.0)  # one batch size only: all cost is per row
