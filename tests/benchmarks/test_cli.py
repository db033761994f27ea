"""sift-bench end to end on the tiny bundle: the load command writes its JSON, Markdown and plots, with
Sift's figures as ratios to the echo floor measured in the same run; unreachable targets fail clearly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.servers import children, descendants
from tests.conftest import free_port


@pytest.mark.slow
def test_load_writes_results_with_echo_ratios(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "load"
    main(
        [
            "load",
            "--bundle", str(tiny_bundle),
            "--workload", "intent=0.5,search=0.3,relevance=0.2",
            "--candidates", "20",
            "--concurrency", "1,4",
            "--rates", "50",
            "--duration", "0.6",
            "--warmup", "0.2",
            "--repeats", "2",
            "--processes", "1",
            "--output", str(out),
        ]
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["targets"] == ["echo", "sift"]
    assert result["bundle_version"].startswith("tiny-")
    assert result["environment"]["machine"]["cores"] >= 1 and "grpcio" in result["environment"]["packages"]
    closed = result["results"]["closed"]
    assert [level["level"] for level in closed] == [1, 4]
    sift = closed[0]["by_target"]["sift"]
    assert len(sift["repeats"]) == 2
    assert set(sift["repeats"][0]["by_method_ms"]) == {"ClassifyIntent", "Search", "ScoreRelevance"}
    assert sift["median"]["codes"] == {"OK": sum(r["calls"] for r in sift["repeats"])}
    assert sift["ratio_to_floor"]["p50"]["median"] > 0
    assert any(
        k.startswith("sift_inference_duration_seconds") for k in sift["repeats"][0]["server_breakdown"]
    )
    open_level = result["results"]["open"][0]
    assert open_level["level"] == 50 and "send_check" in open_level["by_target"]["sift"]["repeats"][0]
    readme = (out / "README.md").read_text()
    assert "p50 ratio" in readme and result["environment"]["command"] in readme
    for plot in ("latency_cdf.png", "throughput_vs_concurrency.png", "latency_vs_load.png"):
        assert (out / plot).stat().st_size > 1000


def test_unreachable_target_is_a_clear_error(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit, match=f"{target} is not serving Sift .*UNAVAILABLE"):
        main(["load", "--target", target, "--output", str(tmp_path)])


def _running(pid: int) -> bool:
    """Whether a process runs: it exists and is not a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _servers(pid: int) -> set[int]:
    """The Sift servers among a process's children."""
    found = set()
    for child in children(pid):
        with contextlib.suppress(OSError):
            if b"server" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                found.add(child)
    return found


@pytest.mark.slow
def test_a_terminated_harness_stops_the_servers_it_started(tiny_bundle: Path, tmp_path: Path) -> None:
    """SIGTERM (a CI timeout, `kill`) stops sift-bench as Ctrl-C does, through its cleanup: no server it
    started, nor their heavy workers, nor its client processes outlive it, and it does not wait out the
    run."""
    bench = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "load", "--bundle", str(tiny_bundle), "--workload", "intent",
         "--concurrency", "1", "--duration", "60", "--repeats", "1", "--processes", "1",
         "--output", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (servers := _servers(bench.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert servers, "sift-bench started no server"
        while len(below := descendants(bench.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)  # the server's heavy worker starts once it is SERVING
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) != 0
    finally:
        if bench.poll() is None:
            bench.kill()
    deadline = time.monotonic() + 30
    while (left := {pid for pid in below if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after sift-bench stopped: {left}"
