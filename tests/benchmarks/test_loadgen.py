"""The load generator against the echo floor: coordinated omission, send-rate checks, closed-loop counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.loadgen import LoadGenerator, send_check
from benchmarks.servers import start_echo

PATH = "/sift.v1.IntentService/ClassifyIntent"
PAYLOADS = [(PATH, b"\n\x05chair")]
STALL_MS = 200.0


@pytest.fixture(scope="module")
def generator() -> Iterator[LoadGenerator]:
    with LoadGenerator(processes=1) as gen:
        yield gen


def _echo(tmp_path: Path, stall_at: float = 0.0):
    return start_echo(
        {PATH: b"\n\x03abc"}, tmp_path, stall_at=stall_at, stall_ms=STALL_MS if stall_at else 0.0
    )


def test_open_loop_shows_a_stall_that_closed_loop_hides(generator: LoadGenerator, tmp_path: Path) -> None:
    """One 200 ms server pause mid-run. Open loop keeps sending on schedule, so every call due during the
    pause waits: its p99.9 carries the stall. Closed loop stops sending while it waits, so only one call is
    slow and p99.9 looks healthy: coordinated omission. The stall is the same in both (see max)."""
    rate, warmup, duration = 400.0, 0.5, 3.0
    echo, address = _echo(tmp_path, stall_at=warmup + duration / 2)
    try:
        open_run = generator.run(
            address, PAYLOADS, mode="open", rate=rate, warmup_s=warmup, duration_s=duration
        )
    finally:
        echo.stop()
    echo, address = _echo(tmp_path, stall_at=warmup + duration / 2)
    try:
        closed_run = generator.run(
            address, PAYLOADS, mode="closed", concurrency=1, warmup_s=warmup, duration_s=duration
        )
    finally:
        echo.stop()

    open_lat, closed_lat = open_run.latency, closed_run.latency
    assert open_run.codes == {"OK": open_lat.count} and closed_run.codes == {"OK": closed_lat.count}
    assert closed_lat.count > 1000, "p99.9 needs over 1,000 calls to step over one slow call"
    assert open_lat.max_s >= 0.9 * STALL_MS / 1000 and closed_lat.max_s >= 0.9 * STALL_MS / 1000
    assert open_lat.quantile(0.999) >= 0.5 * STALL_MS / 1000
    assert open_lat.quantile(0.99) >= 0.25 * STALL_MS / 1000  # ~80 of ~1,200 calls were due in the pause
    assert closed_lat.quantile(0.999) < 0.5 * STALL_MS / 1000


def test_open_loop_reports_whether_it_kept_its_rate(generator: LoadGenerator, tmp_path: Path) -> None:
    echo, address = _echo(tmp_path)
    try:
        run = generator.run(
            address, PAYLOADS, mode="open", rate=200.0, warmup_s=0.3, duration_s=1.5, arrival="constant"
        )
    finally:
        echo.stop()
    check = send_check(run, 200.0)
    assert 180 <= check["achieved_send_rate"] <= 220
    impossible = send_check(run, 5000.0)  # the same run, judged against a rate it never offered
    assert not impossible["ok"] and "fell behind" in impossible["message"]


def test_closed_loop_keeps_the_asked_concurrency_and_counts_errors(
    generator: LoadGenerator, tmp_path: Path
) -> None:
    echo, address = _echo(tmp_path)
    try:
        run = generator.run(
            address,
            [*PAYLOADS, ("/sift.v1.Nope/Missing", b"")],
            mode="closed",
            concurrency=4,
            warmup_s=0.2,
            duration_s=1.0,
        )
    finally:
        echo.stop()
    assert run.codes["OK"] > 0 and run.codes["UNIMPLEMENTED"] > 0
    assert run.qps > 0 and run.window_s == 1.0
