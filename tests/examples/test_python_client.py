"""examples/python_client.py, a few lines over sift_client: its CLI against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import LiveServer

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "python_client.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SIFT_API_KEY"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_cli_classifies_searches_and_scores(live_server: LiveServer) -> None:
    done = _run("--address", live_server.address, "--json", "-k", "5", "oak coffee table")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["model_version"].startswith("tiny-")
    assert out["intent"] and sum(c["probability"] for c in out["intent"]) <= 1 + 1e-5
    assert out["category_filter"] == out["intent"][0]["id"]  # the tiny model is confident about this one
    hits = out["hits"]
    assert len(hits) == 5 and all(h["category"].startswith(out["category_filter"]) for h in hits)
    relevance = [h["relevance"] for h in hits]
    assert all(0 <= r <= 1 for r in relevance) and relevance == sorted(relevance, reverse=True)
    assert all(h["grade"] in ("exact", "partial", "irrelevant") for h in hits)

    text = _run("--address", live_server.address, "velvet accent chair")
    assert text.returncode == 0 and "intent" in text.stdout and "re-ranked" in text.stdout


def test_cli_reports_a_server_it_cannot_reach(live_server: LiveServer) -> None:
    from tests.conftest import free_port

    done = _run("--address", f"127.0.0.1:{free_port()}", "oak")
    assert done.returncode == 1 and done.stdout == ""
    assert "UNAVAILABLE" in done.stderr or "DEADLINE_EXCEEDED" in done.stderr
