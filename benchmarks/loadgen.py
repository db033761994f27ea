"""The load generator: open loop (a fixed arrival rate) and closed loop (a fixed number in flight).

Requests are pre-serialized bytes sent on raw method paths, so the same client code loads Sift, the echo
floor and MLServer, and the client spends no time building protobufs. Load comes from several client
processes, each running asyncio, all starting at one shared monotonic instant.

Open loop measures each call from its *intended* send time: when the server stalls, the calls that should
have gone out meanwhile carry the stall in their latency (no coordinated omission). The time from intended
to actual send (the client's own lag) is recorded too, and a run whose client fell behind says so.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import grpc
import numpy as np
import uvloop

from benchmarks.histogram import LatencyHistogram

Payload = tuple[str, bytes]  # (method path, serialized request)
Mode = Literal["open", "closed"]

# A client whose sends run this late, at p99, no longer offers the load it claims.
MAX_SEND_LAG_P99_S = 0.005
MIN_SEND_RATE_FRACTION = 0.95
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


def method_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Plan:
    """What one client process does in one run."""

    target: str
    payloads: list[Payload]
    mode: Mode
    warmup_s: float
    duration_s: float
    rate: float = 0.0  # open loop: arrivals per second from this process
    arrival: Literal["poisson", "constant"] = "poisson"
    concurrency: int = 1  # closed loop: calls in flight from this process
    timeout_s: float = 10.0
    seed: int = 0
    offset: int = 0  # where in `payloads` this run starts, so runs do not all replay the same prefix


@dataclass
class RunResult:
    """One run, merged over client processes. Latency histograms exclude warm-up; `by_method` holds the
    answered (OK) calls, `failed` the time to each error, so fast refusals do not flatter the latency."""

    by_method: dict[str, LatencyHistogram] = field(default_factory=dict)
    failed: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    codes: Counter[str] = field(default_factory=Counter)
    completed_in_window: int = 0
    sent_in_window: int = 0  # open loop: calls actually sent within the measured window
    window_s: float = 0.0
    client_cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def latency(self) -> LatencyHistogram:
        merged = LatencyHistogram()
        for hist in self.by_method.values():
            merged.merge(hist)
        return merged

    @property
    def qps(self) -> float:
        return self.completed_in_window / self.window_s if self.window_s else 0.0

    def merge(self, other: RunResult) -> None:
        for name, hist in other.by_method.items():
            self.by_method.setdefault(name, LatencyHistogram()).merge(hist)
        self.failed.merge(other.failed)
        self.send_lag.merge(other.send_lag)
        self.codes.update(other.codes)
        self.completed_in_window += other.completed_in_window
        self.sent_in_window += other.sent_in_window
        self.window_s = max(self.window_s, other.window_s)
        self.client_cpu_s += other.client_cpu_s
        self.wall_s = max(self.wall_s, other.wall_s)


class _Recorder:
    def __init__(self, window_start: float, window_end: float) -> None:
        self.result = RunResult(window_s=window_end - window_start)
        self.window_start = window_start
        self.window_end = window_end

    async def call(
        self, stub: grpc.aio.UnaryUnaryMultiCallable, payload: bytes, name: str, origin: float, timeout: float
    ) -> None:
        """Sends one call; its latency runs from `origin` (intended send in open loop, actual in closed)."""
        try:
            await stub(payload, timeout=timeout)
            code = "OK"
        except grpc.aio.AioRpcError as e:
            code = e.code().name
        done = time.monotonic()
        if origin >= self.window_start:
            hist = (
                self.result.by_method.setdefault(name, LatencyHistogram())
                if code == "OK"
                else self.result.failed
            )
            hist.record(done - origin)
            self.result.codes[code] += 1
        if self.window_start <= done <= self.window_end:
            self.result.completed_in_window += 1


def _arrivals(plan: Plan) -> np.ndarray:
    """Intended send offsets from the start, in seconds."""
    total = plan.warmup_s + plan.duration_s
    rng = np.random.default_rng(plan.seed)
    expected = plan.rate * total
    if plan.arrival == "constant":
        offsets = np.arange(math.ceil(expected)) / plan.rate + rng.uniform(0, 1 / plan.rate)
    else:
        gaps = rng.exponential(1 / plan.rate, size=int(expected + 6 * math.sqrt(expected) + 16))
        offsets = np.cumsum(gaps)
    return offsets[offsets < total]


async def _open_loop(plan: Plan, start: float, recorder: _Recorder, stubs: dict) -> None:
    tasks = []
    offsets = _arrivals(plan)
    measured_from = plan.warmup_s
    for i, offset in enumerate(offsets):
        intended = start + offset
        delay = intended - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        path, payload = plan.payloads[(plan.offset + i) % len(plan.payloads)]
        now = time.monotonic()
        if offset >= measured_from:
            recorder.result.send_lag.record(max(now - intended, 0.0))
        if recorder.window_start <= now <= recorder.window_end:
            recorder.result.sent_in_window += 1
        call = recorder.call(stubs[path], payload, method_name(path), intended, plan.timeout_s)
        tasks.append(asyncio.ensure_future(call))
    await asyncio.gather(*tasks)


async def _closed_loop(plan: Plan, start: float, recorder: _Recorder, stubs: dict) -> None:
    end = recorder.window_end

    async def user(first: int) -> None:
        i = plan.offset + first
        while (now := time.monotonic()) < end:
            path, payload = plan.payloads[i % len(plan.payloads)]
            await recorder.call(stubs[path], payload, method_name(path), now, plan.timeout_s)
            i += plan.concurrency

    await asyncio.gather(*(user(j) for j in range(plan.concurrency)))


async def _run(plan: Plan, start: float) -> RunResult:
    window_start = start + plan.warmup_s
    recorder = _Recorder(window_start, window_start + plan.duration_s)
    async with grpc.aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=max(start - time.monotonic(), 1.0))
        stubs = {path: channel.unary_unary(path) for path in {p for p, _ in plan.payloads}}
        cpu_before = _cpu_seconds()
        await asyncio.sleep(max(start - time.monotonic(), 0.0))
        if plan.mode == "open":
            await _open_loop(plan, start, recorder, stubs)
        else:
            await _closed_loop(plan, start, recorder, stubs)
        recorder.result.client_cpu_s = _cpu_seconds() - cpu_before
    recorder.result.wall_s = time.monotonic() - start
    return recorder.result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_worker(plan: Plan, start: float) -> RunResult:
    """Entry point in a client process; uvloop keeps the client's own cost per call low."""
    return uvloop.run(_run(plan, start))


def _noop() -> None:
    return None


class LoadGenerator:
    """A pool of client processes, kept across runs so each run starts at once."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        for future in [self._pool.submit(_noop) for _ in range(processes * 2)]:
            future.result()

    def close(self, abort: bool = False) -> None:
        """Waits for the runs under way, or with `abort` (the harness was interrupted) stops them."""
        if abort:
            # ProcessPoolExecutor has no public way to stop running workers before Python 3.14
            # (terminate_workers); without it the clients would go on to the end of their run.
            for process in list(self._pool._processes.values()):
                process.terminate()
        self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(abort=kind is not None and not issubclass(kind, Exception))

    def submit(
        self, plans: list, lead_s: float = 0.5, worker: Callable = run_worker
    ) -> tuple[list[Future], float]:
        """Starts one plan per process at one shared instant, `lead_s` from now: `worker(plan, start)`."""
        start = time.monotonic() + lead_s
        return [self._pool.submit(worker, plan, start) for plan in plans], start

    def run(
        self,
        target: str,
        payloads: list[Payload],
        *,
        mode: Mode,
        warmup_s: float,
        duration_s: float,
        rate: float = 0.0,
        concurrency: int = 1,
        arrival: Literal["poisson", "constant"] = "poisson",
        timeout_s: float = 10.0,
        seed: int = 0,
        on_progress: Callable[[float], None] | None = None,
    ) -> RunResult:
        """One run split over the processes (rate and concurrency are totals), merged."""
        plans = []
        workers = self.processes if mode == "open" else min(self.processes, concurrency)
        for w in range(workers):
            share = payloads[w::workers] or payloads
            plans.append(
                Plan(
                    target=target,
                    payloads=share,
                    mode=mode,
                    warmup_s=warmup_s,
                    duration_s=duration_s,
                    rate=rate / workers,
                    arrival=arrival,
                    concurrency=concurrency // workers + (1 if w < concurrency % workers else 0),
                    timeout_s=timeout_s,
                    seed=seed * 1000 + w,
                    offset=random.Random(f"{seed}/{w}/{rate}/{concurrency}").randrange(len(share)),
                )
            )
        futures, start = self.submit(plans)
        while not all(f.done() for f in futures):
            time.sleep(0.1)
            if on_progress:
                on_progress(min(max(time.monotonic() - start, 0.0), warmup_s + duration_s))
        merged = RunResult()
        for future in futures:
            merged.merge(future.result())
        return merged


def send_check(result: RunResult, rate: float) -> dict:
    """Did the client offer the load it was asked to? Open loop only."""
    lag = result.send_lag
    achieved = result.sent_in_window / result.window_s if result.window_s else 0.0
    lag_p99 = lag.quantile(0.99) if lag.count else 0.0
    ok = lag_p99 <= MAX_SEND_LAG_P99_S and achieved >= MIN_SEND_RATE_FRACTION * rate
    behind = f"send lag p99 {lag_p99 * 1000:.2f} ms, sent {achieved:.0f}/s of {rate:.0f}/s"
    return {
        "target_rate": round(rate, 1),
        "achieved_send_rate": round(achieved, 1),
        "send_lag_ms": lag.summary_ms(),
        "ok": ok,
        "message": "client kept its schedule" if ok else f"client fell behind: {behind}",
    }
