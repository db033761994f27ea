"""`sift-bench soak`: a mixed open-loop load for a long time, watching the server for leaks and drift.

The run is a chain of windows of fixed length at one arrival rate. After each window it samples the server
process (RSS, open file descriptors, threads) and the window's latency, then sends the same load to the
echo floor (a bare grpc.aio server answering Sift's own response bytes) for a short baseline window. The
first windows are warm-up. It fails when RSS grows more than `max_rss_growth` from the end of warm-up to the
end, when any call fails, or when Sift's p99 *relative to the echo floor's* drifts by more than
`max_p99_drift` (the median ratio over the last third of the measured windows against the first third).
The ratio is what makes the drift check mean something on a shared machine: absolute window p99s swing for
minutes at a time with the neighbours' load (two 10-minute runs swung +33% and +43% with no change in
Sift), and that swing hits the echo floor measured beside each window too. So a slow leak or a server that
degrades with time is caught by a command, not by a graph.
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
    echo_address: str,
    rate: float,
    duration_s: float,
    window_s: float,
    echo_window_s: float,
    warmup_windows: int,
    max_rss_growth: float,
    max_p99_drift: float,
    on_window: Any = None,
) -> dict[str, Any]:
    windows = []
    count = max(int(duration_s // window_s), warmup_windows + 6)
    for i in range(count):
        run = gen.run(address, payloads, mode="open", rate=rate, warmup_s=0.0, duration_s=window_s, seed=i)
        process = sample_process(pid)  # right after Sift's window, before the echo floor's
        echo = gen.run(
            echo_address, payloads, mode="open", rate=rate, warmup_s=0.0, duration_s=echo_window_s, seed=i
        )
        windows.append(
            {
                "window": i,
                "warmup": i < warmup_windows,
                "qps": round(run.qps, 1),
                "latency_ms": run.latency.summary_ms(),
                "echo_p99_ms": echo.latency.summary_ms()["p99"],
                "codes": dict(run.codes),
                "send_check_ok": send_check(run, rate)["ok"],
                **process,
            }
        )
        if on_window:
            on_window(windows[-1])
    return {
        "rate": rate,
        "duration_s": len(windows) * window_s,
        "window_s": window_s,
        "echo_window_s": echo_window_s,
        "warmup_windows": warmup_windows,
        **verdict(windows, max_rss_growth, max_p99_drift),
        "windows": windows,
    }


def verdict(windows: list[dict[str, Any]], max_rss_growth: float, max_p99_drift: float) -> dict[str, Any]:
    """RSS growth, drift of p99 relative to the echo floor, and failed calls over the measured (non-warm-up)
    windows, against the limits. Absolute p99 drift is reported too, for information."""
    measured = [w for w in windows if not w["warmup"]]
    rss_start, rss_end = measured[0]["rss_bytes"], measured[-1]["rss_bytes"]
    third = max(3, len(measured) // 3)
    first, last = measured[:third], measured[-third:]

    def median_of(rows: list[dict[str, Any]], value: Any) -> float:
        return statistics.median(value(w) for w in rows)

    p99_start = median_of(first, lambda w: w["latency_ms"]["p99"])
    p99_end = median_of(last, lambda w: w["latency_ms"]["p99"])
    ratio_start = median_of(first, lambda w: w["latency_ms"]["p99"] / w["echo_p99_ms"])
    ratio_end = median_of(last, lambda w: w["latency_ms"]["p99"] / w["echo_p99_ms"])
    rss_growth = rss_end / rss_start - 1
    ratio_drift = ratio_end / ratio_start - 1
    errors = sum(n for w in measured for code, n in w["codes"].items() if code != "OK")
    failures = []
    if rss_growth > max_rss_growth:
        failures.append(f"RSS grew {rss_growth:.1%} after warm-up (limit {max_rss_growth:.0%})")
    if ratio_drift > max_p99_drift:
        failures.append(f"p99 / echo p99 drifted {ratio_drift:+.1%} (limit {max_p99_drift:.0%})")
    if errors:
        failures.append(f"{errors} calls failed")
    return {
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "rss_growth": round(rss_growth, 4),
        "p99_start_ms": p99_start,
        "p99_end_ms": p99_end,
        "p99_drift": round(p99_end / p99_start - 1, 4),
        "p99_ratio_start": round(ratio_start, 3),
        "p99_ratio_end": round(ratio_end, 3),
        "p99_ratio_drift": round(ratio_drift, 4),
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
        f"{s['duration_s']:.0f} s in {s['window_s']:g} s windows, the first {s['warmup_windows']} warm-up; "
        f"after each, {s['echo_window_s']:g} s of the same load on the echo floor.",
        "",
        f"**{verdict}.** RSS {s['rss_start_bytes'] / mib:.1f} -> {s['rss_end_bytes'] / mib:.1f} MiB "
        f"({s['rss_growth']:+.1%}, limit +{result['limits']['max_rss_growth']:.0%}); p99 relative to the "
        f"echo floor {s['p99_ratio_start']:.2f}x -> {s['p99_ratio_end']:.2f}x ({s['p99_ratio_drift']:+.1%}, "
        f"limit +{result['limits']['max_p99_drift']:.0%}); absolute p99 {s['p99_start_ms']:.3f} -> "
        f"{s['p99_end_ms']:.3f} ms ({s['p99_drift']:+.1%}); failed calls {s['errors']}. Start and end are "
        "medians over the first and last third of the measured windows.",
        "",
        "| window | warm-up | QPS | p50 ms | p99 ms | p99.9 ms | echo p99 ms | p99 / echo | RSS MiB "
        "| open fds | threads | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w in s["windows"]:
        lat = w["latency_ms"]
        errors = {c: n for c, n in w["codes"].items() if c != "OK"} or "-"
        lines.append(
            f"| {w['window']} | {'yes' if w['warmup'] else ''} | {w['qps']:,.0f} | {lat['p50']:.3f} "
            f"| {lat['p99']:.3f} | {lat['p99.9']:.3f} | {w['echo_p99_ms']:.3f} "
            f"| {lat['p99'] / w['echo_p99_ms']:.2f}x | {w['rss_bytes'] / mib:.1f} | {w['open_fds']} "
            f"| {w['threads']} | {errors} |"
        )
    return "\n".join([*lines, ""])
