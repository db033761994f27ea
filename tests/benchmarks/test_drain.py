"""sift-bench drain: each call sent under SIGTERM is accounted for, and the run fails on a lost call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.drain import classify, drain_markdown, server_account


def test_outcomes_are_classified_by_status_and_details() -> None:
    assert classify("OK", "") == "answered"
    assert (
        classify("UNAVAILABLE", "failed to connect to all addresses; Connection refused") == "refused_closed"
    )
    assert classify("CANCELLED", "CANCELLED") == "cancelled"
    assert classify("UNAVAILABLE", "Socket closed") == "lost"  # mid-call: it may have been taken
    # Removed by the server's GOAWAY as its port closed: reconciled with the server's cut count, as CANCELLED.
    goaway = "Stream removed (Socket closed (GOAWAY received; Error code: 0; Debug Text: Server shutdown))"
    assert classify("UNAVAILABLE", goaway) == "cancelled"
    # Held by core until the grace period ended (no handler took it, or the server's cut count says so).
    assert classify("UNAVAILABLE", "Cancelling all calls") == "cancelled"
    assert classify("INTERNAL", "boom") == "lost"


def test_server_account_sums_the_workers_stopped_lines() -> None:
    def line(answered: int, cut: int) -> str:
        account = {
            "answered": answered,
            "refused_unavailable": 0,
            "in_flight_at_close": 1,
            "cut": cut,
            "answered_total": 9,
        }
        return json.dumps({"level": "INFO", "message": "stopped: ...", "drain": account})

    log = "\n".join(["noise", '{"message": "drain period"}', line(3, 0), line(4, 1)])
    assert server_account(log) == {
        "answered": 7,
        "refused_unavailable": 0,
        "in_flight_at_close": 2,
        "cut": 1,
        "answered_total": 18,
    }
    assert server_account("no such line") is None


def test_calls_held_to_the_grace_period_are_reported_apart() -> None:
    drain = {
        "rate": 150, "sigterm_at_s": 1.5, "passed": True, "lost": 0, "exit_code": 0,
        "sent": 10, "answered": 6, "refused_closed": 3, "refused_core": 1, "held_to_grace": 1,
        "not_serving_after_ms": 20.0, "exit_after_s": 6.2, "server_account": {"cut": 0},
        "answered_after_sigterm": 0, "latency_ms_before_sigterm": None, "latency_ms_after_sigterm": None,
        "unclassified_examples": ["UNAVAILABLE: Cancelling all calls"],
    }  # fmt: skip
    result = {"drain": drain, "calls_description": "intent", "serve_args": []}
    shown = drain_markdown(result, [])
    assert "1 of the calls refused by gRPC core were held until the grace period" in shown
    assert "held until" not in drain_markdown({**result, "drain": {**drain, "held_to_grace": 0}}, [])


@pytest.mark.slow
def test_drain_run_loses_no_call_and_writes_its_report(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "drain"
    main(
        [
            "drain",
            "--bundle", str(tiny_bundle),
            "--rate", "150",
            "--sigterm-at", "1.5",
            "--candidates", "20",
            "--output", str(out),
        ]
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())["drain"]
    assert result["passed"] and result["lost"] == 0 and result["exit_code"] == 0
    assert result["server_account"]["cut"] == 0
    assert result["answered_after_sigterm"] > 0  # the drain period still answers
    assert result["not_serving_after_ms"] is not None
    assert result["sent"] == result["answered"] + result["refused_closed"] + result["refused_core"]
    assert result["held_to_grace"] <= result["refused_core"]
    assert "PASSED" in (out / "README.md").read_text()
