"""`sift-bench startup`: cold start (process start to gRPC health SERVING) and the memory of one serving
process, with proof that the index is memory-mapped rather than copied into the heap."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.servers import Process, free_port, proc_status, wait_serving


def _mapped(pid: int, path: Path) -> bool:
    return str(path.resolve()) in Path(f"/proc/{pid}/maps").read_text()


def measure_startup(bundle: Path, repeats: int, extra_args: list[str], workdir: Path) -> dict[str, Any]:
    index = bundle / "index.usearch"
    runs = []
    for i in range(repeats):
        port = free_port()
        args = [sys.executable, "-m", "server", "--bundle", str(bundle), "--port", str(port)]
        args += ["--metrics-port", "0", "--drain-period", "0", *extra_args]
        start = time.monotonic()
        process = Process(args, workdir / f"startup-{i}.log")
        try:
            wait_serving(f"127.0.0.1:{port}", process=process.popen, poll_s=0.005)
            seconds = time.monotonic() - start
            status = proc_status(process.popen.pid)
            memory = {key: status[key] for key in ("VmRSS", "RssAnon", "RssFile")}
            mapped = _mapped(process.popen.pid, index) if index.is_file() else None
        finally:
            process.stop()
        runs.append({"seconds_to_serving": round(seconds, 3), **memory, "index_mapped": mapped})
    return {
        "repeats": repeats,
        "serve_args": extra_args,
        "median_seconds_to_serving": statistics.median(r["seconds_to_serving"] for r in runs),
        "median_rss_bytes": statistics.median(r["VmRSS"] for r in runs),
        "index_bytes": index.stat().st_size if index.is_file() else 0,
        "bundle_bytes": sum(f.stat().st_size for f in bundle.iterdir() if f.is_file()),
        "runs": runs,
    }


def startup_markdown(result: dict[str, Any], head: list[str]) -> str:
    mib = 1 << 20
    lines = [
        *head,
        "Cold start is from launching `python -m server` to gRPC health SERVING (bundle loaded, verified by "
        "sha256, warmed up), polled every 5 ms. Memory is read from /proc once SERVING: RssAnon is private "
        "memory (heap), RssFile is mapped files (shared libraries, and the index, which usearch opens "
        "memory-mapped).",
        "",
        "| run | seconds to SERVING | RSS MiB | RssAnon MiB | RssFile MiB | index memory-mapped |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(result["runs"], 1):
        lines.append(
            f"| {i} | {r['seconds_to_serving']:.3f} | {r['VmRSS'] / mib:.1f} | {r['RssAnon'] / mib:.1f} "
            f"| {r['RssFile'] / mib:.1f} | {r['index_mapped']} |"
        )
    lines += [
        "",
        f"Median cold start **{result['median_seconds_to_serving']:.2f} s**; median RSS "
        f"**{result['median_rss_bytes'] / mib:.1f} MiB**; bundle {result['bundle_bytes'] / mib:.1f} MiB of "
        f"which index {result['index_bytes'] / mib:.1f} MiB.",
        "",
    ]
    return "\n".join(lines)
