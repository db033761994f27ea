"""HeavyWork.offload: which model runs go to the model thread."""

from __future__ import annotations

from server.service.heavy import HeavyWork


class Timed:
    def __init__(self, row_seconds: float | None) -> None:
        self.row_seconds = row_seconds

    def expected_seconds(self, rows: int) -> float | None:
        return None if self.row_seconds is None else rows * self.row_seconds


def test_runs_under_offload_rows_stay_inline_whatever_their_cost() -> None:
    heavy = HeavyWork(offload_rows=64)
    assert not heavy.offload(63, Timed(1.0))
    assert not HeavyWork(offload_rows=0).offload(1000, Timed(1.0))


def test_a_model_not_yet_timed_is_offloaded_by_rows() -> None:
    assert HeavyWork(offload_rows=64).offload(64, Timed(None))
    assert HeavyWork(offload_rows=64).offload(64)


def test_a_run_expected_shorter_than_offload_min_ms_stays_inline_while_the_loop_has_nothing_else() -> None:
    def heavy(min_ms: float, shared: bool) -> HeavyWork:
        return HeavyWork(offload_rows=64, offload_min_ms=min_ms, loop_shared=lambda: shared)

    assert not heavy(1.0, shared=False).offload(100, Timed(4e-6))  # 0.4 ms: a 100-id relevance run
    assert heavy(1.0, shared=False).offload(300, Timed(4e-6))  # 1.2 ms
    assert heavy(1.0, shared=True).offload(100, Timed(4e-6))  # other calls can use the loop meanwhile
    assert heavy(0.0, shared=False).offload(100, Timed(4e-6))
