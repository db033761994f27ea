"""`sift-bench soak`: a mixed open-loop load for a long time, watching the server for leaks and drift.

The run is a chain of windows of fixed length at one arrival rate. After each window it samples the server
process (RSS, open file descriptors, threads) and the window's latency. The first windows are warm-up.
It fails when RSS grows more than `max_rss_growth` from the end of warm-up to the end, or when p99 drifts
more than `max_p99_drift` (the median window p99 of the last third of the measured windows against the first
third: one 10 s window's p99 on a shared 2-core machine swings by +-40% with no trend, so a handful of
windows cannot tell drift from noise, while a third of the run can),
so that a slow leak or a server that degrades with time is caught by a command, not by a graph.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.loadgen import LoadGenerator, Payload, send_check
from benchmarks.servers import proc_status


def sample_process(pid: int) -> dict[str, int]:
    status = proc_status(pid)
    return {
        "rss_bytes": status["VmRSS"],
        "threads": status["Threads"],
        "open_fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def soak(
    gen: LoadGenerator,
    address: str,
    pid: int,
    payloads: list[Payload],
    *,
    rate: float,
    duration_s: float,
    window_s: float,
    warmup_windows: int,
    max_rss_growth: float,
    max_p99_drift: float,
    on_window: Any = None,
) -> dict[str, Any]:
    windows = []
    count = max(int(duration_s // window_s), warmup_windows + 6)
    for i in range(count):
        run = gen.run(address, payloads, mode="open", rate=rate, warmup_s=0.0, duration_s=window_s, seed=i)
        windows.append(
            {
                "window": i,
                "warmup": i < warmup_windows,
                "qps": round(run.qps, 1),
                "latency_ms": run.latency.summary_ms(),
                "codes": dict(run.codes),
                "send_check_ok": send_check(run, rate)["ok"],
                **sample_process(pid),
            }
        )
        if on_window:
            on_window(windows[-1])
    return {
        "rate": rate,
        "duration_s": len(windows) * window_s,
        "window_s": window_s,
        "warmup_windows": warmup_windows,
        **verdict(windows, max_rss_growth, max_p99_drift),
        "windows": windows,
    }


def verdict(windows: list[dict[str, Any]], max_rss_growth: float, max_p99_drift: float) -> dict[str, Any]:
    """RSS growth, p99 drift and failed calls over the measured (non-warm-up) windows, against the limits."""
    measured = [w for w in windows if not w["warmup"]]
    rss_start, rss_end = measured[0]["rss_bytes"], measured[-1]["rss_bytes"]
    third = max(3, len(measured) // 3)
    p99_start = statistics.median(w["latency_ms"]["p99"] for w in measured[:third])
    p99_end = statistics.median(w["latency_ms"]["p99"] for w in measured[-third:])
    rss_growth = rss_end / rss_start - 1
    p99_drift = p99_end / p99_start - 1
    errors = sum(n for w in measured for code, n in w["codes"].items() if code != "OK")
    failures = []
    if rss_growth > max_rss_growth:
        failures.append(f"RSS grew {rss_growth:.1%} after warm-up (limit {max_rss_growth:.0%})")
    if p99_drift > max_p99_drift:
        failures.append(f"p99 drifted {p99_drift:+.1%} (limit {max_p99_drift:.0%})")
    if errors:
        failures.append(f"{errors} calls failed")
    return {
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "rss_growth": round(rss_growth, 4),
        "p99_start_ms": p99_start,
        "p99_end_ms": p99_end,
        "p99_drift": round(p99_drift, 4),
        "errors": errors,
        "passed": not failures,
        "failures": failures,
    }


def soak_markdown(result: dict[str, Any], head: list[str]) -> str:
    mib = 1 << 20
    s = result["soak"]
    verdict = "PASSED" if s["passed"] else "FAILED: " + "; ".join(s["failures"])
    lines = [
        *head,
        f"Workload `{result['workload']}` open loop (Poisson) at {s['rate']:g} calls/s for "
        f"{s['duration_s']:.0f} s in {s['window_s']:g} s windows, the first {s['warmup_windows']} warm-up.",
        "",
        f"**{verdict}.** RSS {s['rss_start_bytes'] / mib:.1f} -> {s['rss_end_bytes'] / mib:.1f} MiB "
        f"({s['rss_growth']:+.1%}, limit +{result['limits']['max_rss_growth']:.0%}); p99 "
        f"{s['p99_start_ms']:.3f} -> {s['p99_end_ms']:.3f} ms ({s['p99_drift']:+.1%}, limit "
        f"+{result['limits']['max_p99_drift']:.0%}); failed calls {s['errors']}.",
        "",
        "| window | warm-up | QPS | p50 ms | p99 ms | p99.9 ms | RSS MiB | open fds | threads | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w in s["windows"]:
        lat = w["latency_ms"]
        errors = {c: n for c, n in w["codes"].items() if c != "OK"} or "-"
        lines.append(
            f"| {w['window']} | {'yes' if w['warmup'] else ''} | {w['qps']:,.0f} | {lat['p50']:.3f} "
            f"| {lat['p99']:.3f} | {lat['p99.9']:.3f} | {w['rss_bytes'] / mib:.1f} | {w['open_fds']} "
            f"| {w['threads']} | {errors} |"
        )
    return "\n".join([*lines, ""])
