"""`sift-bench overload`: Sift above its capacity, with clients that retry at once and clients that honour
`grpc-retry-pushback-ms`, and an account of what was answered, refused and how fast.

Cases (each on the same sift-serve, one after the other):
- **solo**: each call alone (1 in flight, no retries): its latency, which sets the rates below.
- **capacity** of the mix (ClassifyIntent, Search, and ScoreRelevance of `--heavy-candidates` titles): its
  calls served one after another at their solo latency, 1 / sum(weight x solo p50). (A closed loop of the
  mix would measure admission, not capacity: it sheds the heavy calls and answers the cheap ones.)
- **ladder**: the mix open loop (Poisson) at each multiple of capacity, once per client kind: `immediate`
  resends a refused call at once until its deadline; `pushback` retries RESOURCE_EXHAUSTED and UNAVAILABLE
  only (never CANCELLED), after `grpc-retry-pushback-ms` when the server sends it and after exponential
  backoff otherwise, at most 4 attempts, with gRPC's retry throttling (10 tokens, 0.1 back per success).
- **flood**: `--flood-concurrency` calls in flight, each a ScoreRelevance of `--heavy-candidates` titles,
  closed loop from clients that retry at once (the issue's flood).
- **hol**: ClassifyIntent open loop at `--hol-load` of its own capacity, alone, then beside heavy
  relevance calls at a rate that takes `--hol-heavy-cpu` of one core (from their solo latency), then beside
  a control that takes the same CPU outside Sift (benchmarks/cpu_burner.py), round after round.

Per case: goodput (calls answered OK within their deadline, per second), latency of the admitted attempts
per method (send of the attempt that was answered, to its answer), final outcomes and refusals (every
refused attempt) by status code, server CPU, and the server's own time in refused calls' handlers
(`sift_request_duration_seconds` of RESOURCE_EXHAUSTED calls: the admission check and the status, not gRPC
core's share of the call).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import resource
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.histogram import LatencyHistogram
from benchmarks.loadgen import CHANNEL_OPTIONS, LoadGenerator, Payload, method_name

Retry = Literal["none", "immediate", "pushback"]
ClientPriority = Literal["normal", "idle"]
RETRYABLE = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")  # what a well-behaved client retries
PUSHBACK_KEY = "grpc-retry-pushback-ms"
# The pushback client's policy: sift_client's RetryPolicy (sift_client/channel.py), done by hand so that every
# refused attempt is seen and counted.
MAX_ATTEMPTS = 4
INITIAL_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.5
THROTTLE_TOKENS, THROTTLE_RATIO = 10.0, 0.1


@dataclass(frozen=True)
class Plan:
    target: str
    payloads: list[Payload]
    warmup_s: float
    duration_s: float
    retry: Retry
    timeout_s: float
    rate: float = 0.0  # open loop (arrivals/s from this process); 0 = closed loop
    concurrency: int = 0  # closed loop: calls in flight from this process
    seed: int = 0
    client_priority: ClientPriority = "normal"


@dataclass
class Outcome:
    """One run, merged over client processes (measured window only)."""

    admitted: dict[str, LatencyHistogram] = field(default_factory=dict)  # per method, OK attempts
    final: Counter[str] = field(default_factory=Counter)  # per call: its last status
    refusals: Counter[str] = field(default_factory=Counter)  # per refused attempt
    good_by_method: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    good_in_window: int = 0
    window_s: float = 0.0
    client_cpu_s: float = 0.0

    def merge(self, other: Outcome) -> None:
        for name, hist in other.admitted.items():
            self.admitted.setdefault(name, LatencyHistogram()).merge(hist)
        self.final.update(other.final)
        self.refusals.update(other.refusals)
        self.good_by_method.update(other.good_by_method)
        self.sent += other.sent
        self.good_in_window += other.good_in_window
        self.window_s = max(self.window_s, other.window_s)
        self.client_cpu_s += other.client_cpu_s


class _Throttle:
    """gRPC's retry throttling: a failed attempt costs a token, a success gives back `ratio`; no retries
    while the bucket is at or below half."""

    def __init__(self) -> None:
        self.tokens = THROTTLE_TOKENS

    def failed(self) -> bool:
        """Records a failure; True when a retry is allowed."""
        self.tokens = max(self.tokens - 1, 0.0)
        return self.tokens > THROTTLE_TOKENS / 2

    def succeeded(self) -> None:
        self.tokens = min(self.tokens + THROTTLE_RATIO, THROTTLE_TOKENS)


class _Client:
    def __init__(self, plan: Plan, stubs: dict, window: tuple[float, float], seed: int) -> None:
        self.plan = plan
        self.stubs = stubs
        self.window = window
        self.out = Outcome(window_s=window[1] - window[0])
        self.throttle = _Throttle()
        self.rng = random.Random(seed)

    async def call(self, path: str, payload: bytes, origin: float) -> None:
        """One logical call from `origin` with its retries, until answered, given up, or past its deadline."""
        name = method_name(path)
        deadline = origin + self.plan.timeout_s
        measured = origin >= self.window[0]
        attempt, backoff, code = 0, INITIAL_BACKOFF_S, "DEADLINE_EXCEEDED"
        while (left := deadline - time.monotonic()) > 0:
            attempt += 1
            sent = time.monotonic()
            try:
                await self.stubs[path](payload, timeout=left)
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
                if code != "DEADLINE_EXCEEDED" and measured:
                    self.out.refusals[code] += 1
                if not self._retry(e, code, attempt, backoff):
                    break
                if self.plan.retry == "pushback":
                    await asyncio.sleep(self._wait(e, backoff))
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            done = time.monotonic()
            self.throttle.succeeded()
            if measured:
                self.out.admitted.setdefault(name, LatencyHistogram()).record(done - sent)
            if self.window[0] <= done <= self.window[1]:
                self.out.good_in_window += 1
                self.out.good_by_method[name] += 1
            break
        if measured:
            self.out.final[code] += 1

    def _retry(self, error: grpc.aio.AioRpcError, code: str, attempt: int, backoff: float) -> bool:
        if self.plan.retry == "none" or code == "DEADLINE_EXCEEDED":
            return False
        if self.plan.retry == "immediate":
            return True
        allowed = self.throttle.failed()
        pushback = _pushback_ms(error)
        # gRPC: a negative pushback means "do not retry"; CANCELLED is never retried.
        refused_for_good = pushback is not None and pushback < 0
        return allowed and code in RETRYABLE and attempt < MAX_ATTEMPTS and not refused_for_good

    def _wait(self, error: grpc.aio.AioRpcError, backoff: float) -> float:
        pushback = _pushback_ms(error)
        return pushback / 1000 if pushback is not None else self.rng.uniform(0, backoff)


def _pushback_ms(error: grpc.aio.AioRpcError) -> int | None:
    for key, value in error.trailing_metadata() or ():
        if key == PUSHBACK_KEY:
            try:
                return int(value)
            except ValueError:
                return -1
    return None


async def _drive(plan: Plan, start: float) -> Outcome:
    window = (start + plan.warmup_s, start + plan.warmup_s + plan.duration_s)
    async with grpc.aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=max(start - time.monotonic(), 1.0))
        stubs = {path: channel.unary_unary(path) for path in {p for p, _ in plan.payloads}}
        client = _Client(plan, stubs, window, plan.seed)
        rng = np.random.default_rng(plan.seed)
        cpu_before = _cpu_seconds()
        await asyncio.sleep(max(start - time.monotonic(), 0.0))
        if plan.rate:
            total = plan.warmup_s + plan.duration_s
            n = int(plan.rate * total + 6 * math.sqrt(plan.rate * total) + 16)
            offsets = np.cumsum(rng.exponential(1 / plan.rate, size=n))
            tasks = []
            for i, offset in enumerate(offsets[offsets < total]):
                intended = start + offset
                if (delay := intended - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                path, payload = plan.payloads[i % len(plan.payloads)]
                if window[0] <= intended <= window[1]:
                    client.out.sent += 1
                tasks.append(asyncio.ensure_future(client.call(path, payload, intended)))
            await asyncio.gather(*tasks)
        else:

            async def user(first: int) -> None:
                i = first
                while (now := time.monotonic()) < window[1]:
                    path, payload = plan.payloads[i % len(plan.payloads)]
                    if now >= window[0]:
                        client.out.sent += 1
                    await client.call(path, payload, now)
                    i += plan.concurrency

            await asyncio.gather(*(user(j) for j in range(plan.concurrency)))
        client.out.client_cpu_s = _cpu_seconds() - cpu_before
    return client.out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def set_client_priority(priority: ClientPriority) -> None:
    """The calling thread's scheduling: "normal", or "idle" (Linux's SCHED_IDLE: only the CPU that no
    other task wants, so the clients never take a core the server could use, as clients on other machines
    would not; their own latency figures then include their wait for a core). run_worker calls it before
    the case opens its channel, so the threads gRPC starts then inherit it; threads a process started
    under another case keep theirs, so one run uses one priority throughout. Not server/heavy_worker.py's
    enter_idle_policy, which has no way back to normal, and whose import would load the
    server's modules into every client process."""
    policy = os.SCHED_IDLE if priority == "idle" else os.SCHED_OTHER
    if os.sched_getscheduler(0) != policy:  # a no-op call would still need the right to make it
        os.sched_setscheduler(0, policy, os.sched_param(0))


def run_worker(plan: Plan, start: float) -> Outcome:
    set_client_priority(plan.client_priority)  # the pool's processes serve every case: set it each time
    return uvloop.run(_drive(plan, start))


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, its live descendants (sift-serve's heavy workers) and its reaped
    children, from /proc; Linux only."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:  # ended meanwhile
            continue
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        for task in tasks:
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return total


def refused_handler_seconds(metrics_url: str) -> tuple[float, int]:
    """(seconds, calls) in handlers of calls refused with RESOURCE_EXHAUSTED, from the server's metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    seconds, calls = 0.0, 0
    for family in text_string_to_metric_families(text):
        if family.name != "sift_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("code") != "RESOURCE_EXHAUSTED":
                continue
            if sample.name.endswith("_sum"):
                seconds += sample.value
            elif sample.name.endswith("_count"):
                calls += int(sample.value)
    return seconds, calls


@dataclass(frozen=True)
class Server:
    address: str
    pid: int
    metrics_url: str


def run_case(
    gen: LoadGenerator,
    server: Server,
    payloads: list[Payload],
    *,
    retry: Retry,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
    rate: float = 0.0,
    concurrency: int = 0,
    seed: int = 0,
    client_priority: ClientPriority = "normal",
) -> dict[str, Any]:
    """One case, split over the generator's processes, with the server's CPU and refusal time around it."""
    workers = gen.processes if rate else min(gen.processes, concurrency)
    plans = [
        Plan(
            target=server.address,
            payloads=payloads[w::workers] or payloads,
            warmup_s=warmup_s,
            duration_s=duration_s,
            retry=retry,
            timeout_s=timeout_s,
            rate=rate / workers,
            concurrency=concurrency // workers + (1 if w < concurrency % workers else 0),
            seed=seed * 1000 + w,
            client_priority=client_priority,
        )
        for w in range(workers)
    ]
    cpu_before = process_cpu_seconds(server.pid)
    refused_before = refused_handler_seconds(server.metrics_url)
    futures, start = gen.submit(plans, worker=run_worker)
    merged = Outcome()
    for future in futures:
        merged.merge(future.result())
    wall = time.monotonic() - start
    cpu = process_cpu_seconds(server.pid) - cpu_before
    refused_after = refused_handler_seconds(server.metrics_url)
    refusals = sum(merged.refusals.values())
    return {
        "retry": retry,
        "offered_per_s": round(rate, 1) if rate else None,
        "concurrency": concurrency or None,
        "sent": merged.sent,
        "goodput_per_s": round(merged.good_in_window / merged.window_s, 1) if merged.window_s else 0.0,
        "goodput_by_method_per_s": {
            m: round(n / merged.window_s, 1) for m, n in sorted(merged.good_by_method.items())
        },
        "admitted_ms": {m: h.summary_ms() for m, h in sorted(merged.admitted.items())},
        "final_codes": dict(merged.final),
        "refusals_by_code": dict(merged.refusals),
        "refusals": refusals,
        "cancelled_share": round(merged.refusals["CANCELLED"] / refusals, 4) if refusals else 0.0,
        "server_cpu_cores": round(cpu / wall, 3),
        "refusing_handler_s": round(refused_after[0] - refused_before[0], 3),
        "refusing_handler_us_each": round(
            1e6 * (refused_after[0] - refused_before[0]) / max(refused_after[1] - refused_before[1], 1), 1
        ),
        "client_cpu_cores": round(merged.client_cpu_s / wall, 3),
    }


def checks(
    flood: dict[str, Any] | None, ladder: list[dict[str, Any]], hol: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The issue's done-when figures from one run's cases: each with its figure, target and whether met."""
    out = []
    if flood is not None:
        flood_rel = flood["admitted_ms"].get("ScoreRelevance") or {"p99": float("inf")}
        refused = flood["refusals"] or 1
        exhausted = flood["refusals_by_code"].get("RESOURCE_EXHAUSTED", 0) / refused
        out += [
            {
                "what": "flood: admitted ScoreRelevance p99",
                "figure": f"{flood_rel['p99']:.1f} ms",
                "target": "<= 250 ms",
                "met": flood_rel["p99"] <= 250,
            },
            {
                "what": "flood: refusals that are RESOURCE_EXHAUSTED / CANCELLED",
                "figure": f"{exhausted:.2%} / {flood['cancelled_share']:.2%}",
                "target": "> 99% / < 1%",
                "met": exhausted > 0.99 and flood["cancelled_share"] < 0.01,
            },
        ]
    if ladder:
        worst = min(ladder, key=lambda row: row["goodput_ratio"])
        out.append(
            {
                "what": "ladder: lowest goodput over the same clients' goodput at 1x, 1x-10x",
                "figure": f"{worst['goodput_ratio']:.2f}x ({worst['label']})",
                "target": ">= 0.80x",
                "met": worst["goodput_ratio"] >= 0.8,
            }
        )
        # No collapse: more offered load never loses more than a fifth of the goodput already reached.
        drops = []
        for row in ladder:
            before = [
                r["goodput_per_s"]
                for r in ladder
                if r["retry"] == row["retry"] and r["multiple"] < row["multiple"]
            ]
            if before and max(before) > 0:
                drops.append((row["goodput_per_s"] / max(before), row["label"]))
        if drops:
            ratio, label = min(drops)
            out.append(
                {
                    "what": "ladder: lowest goodput over the best at a lower multiple (no collapse)",
                    "figure": f"{ratio:.2f}x ({label})",
                    "target": ">= 0.80x",
                    "met": ratio >= 0.8,
                }
            )
        cancelled = max(ladder, key=lambda row: row["cancelled_share"])
        out.append(
            {
                "what": "ladder: highest share of refused attempts that are CANCELLED",
                "figure": f"{cancelled['cancelled_share']:.2%} ({cancelled['label']})",
                "target": "< 1%",
                "met": cancelled["cancelled_share"] < 0.01,
            }
        )
    if hol is not None:
        spread = f"{_span(hol['p99_ratio_range'])} over {len(hol['pairs'])}"
        out.append(
            {
                "what": "hol: ClassifyIntent p99 beside heavy relevance / alone, median of rounds",
                "figure": f"{hol['p99_ratio']:.2f}x ({spread})",
                "target": "<= 2x",
                "met": hol["p99_ratio"] <= 2,
            }
        )
    return out


def _span(bounds: list[float]) -> str:
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}x"


def _ms(summary: dict[str, float] | None, key: str) -> str:
    return f"{summary[key]:.1f}" if summary else "-"


def _codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{c} {n:,}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1])) or "-"


def case_row(label: str, case: dict[str, Any], methods: tuple[str, ...]) -> str:
    admitted = case["admitted_ms"]
    latency = " | ".join(f"{_ms(admitted.get(m), 'p50')} / {_ms(admitted.get(m), 'p99')}" for m in methods)
    return (
        f"| {label} | {case['goodput_per_s']:,.1f} | {latency} | {_codes(case['final_codes'])} "
        f"| {_codes(case['refusals_by_code'])} | {case['cancelled_share']:.2%} "
        f"| {case['server_cpu_cores']:.2f} "
        f"| {case['refusing_handler_s']:.2f} s ({case['refusing_handler_us_each']:.0f} us each) "
        f"| {case['client_cpu_cores']:.2f} |"
    )


def table_head(first: str, methods: tuple[str, ...]) -> list[str]:
    names = " | ".join(f"{m} p50 / p99 ms" for m in methods)
    return [
        f"| {first} | goodput /s | {names} | final status | refused attempts by code | CANCELLED share "
        "| server CPU cores | in refused calls' handlers | client CPU cores |",
        "|---|---:|" + "---:|" * len(methods) + "---|---|---:|---:|---:|---:|",
    ]


METHODS = ("ClassifyIntent", "Search", "ScoreRelevance")


def overload_markdown(result: dict[str, Any], header: list[str]) -> str:
    r = result["overload"]
    lines = [*header, f"Calls: {result['calls_description']}.", ""]
    if r.get("client_priority") == "idle":
        lines += [
            "Client processes under SCHED_IDLE (`--client-priority idle`): they take only the CPU the server "
            "leaves, as clients on other machines would; their latency figures include their own wait for a "
            "core.",
            "",
        ]
    lines += ["## Done-when figures", ""]
    lines += [
        f"- {c['what']}: **{c['figure']}** (target {c['target']}): {'met' if c['met'] else 'MISSED'}"
        for c in r["checks"]
    ]
    lines += ["", "## Each call alone (1 in flight)", "", *table_head("call", METHODS)]
    lines += [case_row(name, case, METHODS) for name, case in r["solo"].items()]
    if r["ladder"]:
        lines += [
            "",
            f"## Ladder: the mix open loop at multiples of capacity ({r['capacity_per_s']:,.1f}/s), "
            f"deadline {r['deadline_s']:g} s",
            "",
            "Goodput relative to the same clients' at 1x: "
            + ", ".join(f"{row['label']} {row['goodput_ratio']:.2f}x" for row in r["ladder"]),
            "",
            *table_head("offered, clients", METHODS),
            *(case_row(row["label"], row, METHODS) for row in r["ladder"]),
        ]
    if (flood := r["flood"]) is not None:
        lines += [
            "",
            f"## Flood: {flood['concurrency']} in flight, each ScoreRelevance of {r['heavy_candidates']:,} "
            "titles, clients that retry at once",
            "",
            *table_head("case", METHODS),
            case_row("flood", flood, METHODS),
        ]
    if (hol := r["hol"]) is not None:
        lines += [
            "",
            "## Head-of-line: ClassifyIntent open loop beside heavy relevance calls",
            "",
            f"ClassifyIntent at {hol['intent_rate']:,.1f}/s ({hol['load']:.0%} of its closed-loop capacity "
            f"{hol['intent_capacity']:,.1f}/s); heavy relevance at {hol['heavy_rate']:.2f}/s "
            f"({hol['heavy_cpu']:.0%} of a core at its solo latency). Alone and beside alternate, "
            f"{len(hol['pairs'])} rounds; ClassifyIntent p99 beside them / alone, median of the rounds: "
            f"**{hol['p99_ratio']:.2f}x** ({_span(hol['p99_ratio_range'])}).",
            "",
            "Control, in the same rounds: ClassifyIntent beside a process outside Sift that takes the same "
            "CPU in bursts of the heavy calls' solo latency at their rate, under scheduling policy "
            f"`{hol.get('control_policy', '-')}` (the heavy workers' while cheap calls are about; "
            f"benchmarks/cpu_burner.py): p99 / alone **{hol['control_ratio']:.2f}x** "
            f"({_span(hol['control_ratio_range'])}): what background work of that CPU costs ClassifyIntent "
            "on this machine, whatever the server does.",
            "",
            *table_head("case", METHODS),
        ]
        for n, pair in enumerate(hol["pairs"], 1):
            lines += [
                case_row(f"{n}: intent alone", pair["alone"], METHODS),
                case_row(f"{n}: intent + heavy ({pair['p99_ratio']:.2f}x)", pair["beside"], METHODS),
                case_row(f"{n}: intent + control ({pair['control_ratio']:.2f}x)", pair["control"], METHODS),
            ]
    lines += [
        "",
        "Admitted latency runs from the send of the attempt that was answered to its answer; goodput counts "
        "calls answered OK within their deadline in the measured window. Refused attempts: every attempt "
        "that came back with a status other than OK or DEADLINE_EXCEEDED. CANCELLED comes from gRPC core's "
        "pending-queue bound (--max-pending-requests), the last line of defence. 'In refused calls' "
        "handlers' is Sift's own wall time in calls it refused with RESOURCE_EXHAUSTED (its "
        "sift_request_duration_seconds, sending the status included, so an upper bound of its CPU); gRPC "
        "core's cost of receiving them is in the server CPU.",
    ]
    return "\n".join(lines) + "\n"
