"""`sift-bench drain`: SIGTERM in the middle of an open-loop load, and an account of every call sent.

Graceful shutdown promises that a call the server took is answered: health flips to NOT_SERVING while calls
are still answered for the drain period (so that load balancers move traffic away), then the port closes,
in-flight calls finish, and the process exits 0. The client here ignores health and keeps sending to the
same address, the worst case. This run counts each call into one of:

- answered: OK;
- refused at the door: UNAVAILABLE because the port was already closed (the call never reached Sift);
- refused by gRPC core: CANCELLED for a call core held but no handler ever took (its queue of calls the
  event loop has not picked up is dropped when the port closes, and is bounded by --max-pending-requests),
  and UNAVAILABLE after the server's GOAWAY for a stream sent as the connection closed, which the server
  never processed (gRPC retries those transparently when a client enables retries), and UNAVAILABLE
  "Cancelling all calls" for a call core held to the end of the grace period because no handler ever took
  it (grpc.aio's serving loop can drop a call core matched just as the server stopped). All three are
  reconciled with the server's count of calls it cut, so a call a handler took is never counted as refused;
  the last kind is also counted apart (`held_to_grace`), since its client waited out the grace period;
- lost: a call a Sift handler took and did not answer (the server's own account, which it logs when it
  stops: calls cut by the end of the grace period), plus any other status. The promise is lost = 0.

A health watcher polls Check every 20 ms, so the report also says when NOT_SERVING showed after SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.histogram import LatencyHistogram
from benchmarks.loadgen import CHANNEL_OPTIONS, Payload

# Connection-level UNAVAILABLE: the call was never taken by the server. Matched in grpc's details text.
NEVER_REACHED = ("failed to connect", "connection refused", "connect failed", "no connection")
# What core says of the calls it still holds when the grace period ends (grpc_server_cancel_all_calls).
HELD_TO_GRACE = "cancelling all calls"


@dataclass(frozen=True)
class Outcome:
    sent_at: float  # seconds after the start of the run
    latency_s: float
    code: str
    details: str


def classify(code: str, details: str) -> str:
    if code == "OK":
        return "answered"
    if code == "UNAVAILABLE" and any(marker in details.lower() for marker in NEVER_REACHED):
        return "refused_closed"
    if code == "CANCELLED":  # by core or by a cut handler: the server's own count tells them apart
        return "cancelled"
    if (code == "UNAVAILABLE" and "goaway received" in details.lower()) or held_to_grace(code, details):
        # A stream removed by the server's GOAWAY as the port closed, or held by core to the end of the
        # grace period; as for CANCELLED, the server's count of calls cut tells a refusal from a call a
        # handler took.
        return "cancelled"
    return "lost"


def held_to_grace(code: str, details: str) -> bool:
    """Answered by core when the grace period ended (grpc_server_cancel_all_calls), not by a handler."""
    return code == "UNAVAILABLE" and HELD_TO_GRACE in details.lower()


def server_account(log: str) -> dict[str, int] | None:
    """The `drain` field of the server's JSON log line on stopping, summed over worker processes; None if
    it never said."""
    found = []
    for line in log.splitlines():
        if '"drain"' not in line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("drain"), dict):
            found.append(entry["drain"])
    if not found:
        return None
    return {key: sum(int(f[key]) for f in found) for key in found[0]}


async def _drive(
    address: str,
    payloads: list[Payload],
    process: subprocess.Popen,
    *,
    rate: float,
    sigterm_at_s: float,
    max_duration_s: float,
    timeout_s: float,
    seed: int,
) -> tuple[list[Outcome], dict[str, float | None]]:
    rng = np.random.default_rng(seed)
    outcomes: list[Outcome] = []
    marks: dict[str, float | None] = {"sigterm": None, "not_serving": None, "exit": None}
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        calls = {path: channel.unary_unary(path) for path in {p for p, _ in payloads}}
        health = health_pb2_grpc.HealthStub(channel)
        start = time.perf_counter()

        async def one(path: str, body: bytes, sent_at: float) -> None:
            t0 = time.perf_counter()
            try:
                await calls[path](body, timeout=timeout_s)
                code, details = "OK", ""
            except grpc.aio.AioRpcError as e:
                code, details = e.code().name, e.details() or ""
            outcomes.append(Outcome(sent_at, time.perf_counter() - t0, code, details))

        async def watch_health() -> None:
            while marks["exit"] is None:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.aio.AioRpcError:
                    serving = False
                if not serving and marks["sigterm"] is not None and marks["not_serving"] is None:
                    marks["not_serving"] = time.perf_counter() - start
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch_health())
        tasks: list[asyncio.Task] = []
        next_send, i = 0.0, 0
        while True:
            now = time.perf_counter() - start
            if marks["sigterm"] is None and now >= sigterm_at_s:
                process.send_signal(signal.SIGTERM)
                marks["sigterm"] = now
            if marks["exit"] is None and process.poll() is not None:
                marks["exit"] = now
            # Keep sending a little past the exit, so that refusals at the closed port are seen too.
            if (marks["exit"] is not None and now > marks["exit"] + 0.5) or now > max_duration_s:
                break
            if now >= next_send:
                path, body = payloads[i % len(payloads)]
                tasks.append(asyncio.create_task(one(path, body, now)))
                i += 1
                next_send += rng.exponential(1.0 / rate)
            else:
                await asyncio.sleep(min(next_send - now, 0.005))
        await asyncio.gather(*tasks)
        watcher.cancel()
    return outcomes, marks


def drain_run(
    address: str,
    payloads: list[Payload],
    process: subprocess.Popen,
    read_log: Callable[[], str],
    *,
    rate: float,
    sigterm_at_s: float,
    max_duration_s: float = 60.0,
    timeout_s: float = 30.0,
    seed: int = 0,
) -> dict[str, Any]:
    outcomes, marks = asyncio.run(
        _drive(
            address,
            payloads,
            process,
            rate=rate,
            sigterm_at_s=sigterm_at_s,
            max_duration_s=max_duration_s,
            timeout_s=timeout_s,
            seed=seed,
        )
    )
    try:
        exit_code: int | None = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        exit_code = None
    kinds = [classify(o.code, o.details) for o in outcomes]
    counts = Counter(kinds)
    account = server_account(read_log())
    cut = account["cut"] if account else 0
    # Client CANCELLEDs beyond the calls the server cut never reached a handler: core refused them.
    refused_core = max(counts["cancelled"] - cut, 0)
    lost = counts["lost"] + (counts["cancelled"] - refused_core)
    sigterm = marks["sigterm"] or 0.0
    before, after = LatencyHistogram(), LatencyHistogram()
    for o in outcomes:
        if o.code == "OK":
            (before if o.sent_at < sigterm else after).record(o.latency_s)
    odd = [o for o, kind in zip(outcomes, kinds, strict=True) if kind in ("lost", "cancelled")]
    return {
        "rate": rate,
        "sent": len(outcomes),
        "answered": counts["answered"],
        "refused_closed": counts["refused_closed"],
        "refused_core": refused_core,
        "lost": lost,
        "held_to_grace": sum(held_to_grace(o.code, o.details) for o in odd),
        "server_account": account,
        "unclassified_examples": sorted({f"{o.code}: {o.details[:120]}" for o in odd})[:5],
        "codes": dict(Counter(o.code for o in outcomes)),
        "exit_code": exit_code,
        "sigterm_at_s": round(sigterm, 3),
        "not_serving_after_ms": _after_ms(marks["not_serving"], sigterm),
        "exit_after_s": None if marks["exit"] is None else round(marks["exit"] - sigterm, 3),
        "answered_after_sigterm": after.count,
        "latency_ms_before_sigterm": before.summary_ms(),
        "latency_ms_after_sigterm": after.summary_ms() if after.count else None,
        "passed": account is not None and lost == 0 and exit_code == 0 and counts["answered"] > 0,
    }


def _after_ms(mark: float | None, sigterm: float) -> float | None:
    return None if mark is None else round(1000 * (mark - sigterm), 1)


def drain_markdown(result: dict[str, Any], header: list[str]) -> str:
    d = result["drain"]
    lines = [
        *header,
        f"Workload: {result['calls_description']}; open loop at {d['rate']:.0f}/s (Poisson), SIGTERM "
        f"{d['sigterm_at_s']:.1f} s in; sift-serve flags: `{' '.join(result['serve_args'])}`.",
        "",
        f"**{'PASSED' if d['passed'] else 'FAILED'}**: {d['lost']} calls lost, exit code {d['exit_code']}.",
        "",
        "| sent | answered | refused at the closed port | refused by gRPC core "
        "| lost | exit code | NOT_SERVING after SIGTERM | exit after SIGTERM |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {d['sent']:,} | {d['answered']:,} | {d['refused_closed']:,} "
        f"| {d['refused_core']:,} | {d['lost']:,} | {d['exit_code']} | {_ms(d['not_serving_after_ms'])} "
        f"| {d['exit_after_s']} s |",
        "",
        f"The server's own account when it stopped: `{d['server_account']}` (answered and refused during "
        "the shutdown, calls in flight when the port closed, calls cut before their answer, answers over "
        "the process's life).",
        "",
        "Latency of the answered calls (ms), sent before and after SIGTERM:",
        "",
        "| sent | answered | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key, count in (
        ("before SIGTERM", "latency_ms_before_sigterm", d["answered"] - d["answered_after_sigterm"]),
        ("after SIGTERM", "latency_ms_after_sigterm", d["answered_after_sigterm"]),
    ):
        s = d[key]
        if s:
            lines.append(f"| {label} | {count:,} | {s['p50']:.3f} | {s['p99']:.3f} | {s['max']:.3f} |")
    if d["held_to_grace"]:
        lines += [
            "",
            f"{d['held_to_grace']:,} of the calls refused by gRPC core were held until the grace period "
            'ended (UNAVAILABLE "Cancelling all calls"), though no handler took them: grpc.aio\'s serving '
            "loop can drop a call core matched just as the server stopped, and the shutdown then waits the "
            "whole grace period.",
        ]
    if d["unclassified_examples"]:
        lines += ["", "Statuses other than OK and UNAVAILABLE at the closed port:", ""]
        lines += [f"- `{e}`" for e in d["unclassified_examples"]]
    lines += [
        "",
        "Refused calls are not lost: no Sift handler took them. The closed port never saw some, and gRPC "
        "core answers CANCELLED for calls it held that no handler had taken when the port closed (or "
        "beyond --max-pending-requests), or UNAVAILABLE for a stream its GOAWAY removed unprocessed or "
        "a call it held to the end of the grace period; these are counted as refused only beyond the calls "
        "the server says it cut. A client retries "
        "UNAVAILABLE on another replica; CANCELLED is "
        "core's code and standard retry policies (examples/python_client.py's too) leave it to the caller, "
        "who may resend it: Sift's calls are reads, so a retry is always safe.",
    ]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
