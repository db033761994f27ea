"""examples/node/client.js, a Node client built from the .proto files at run time, against a live server."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from server.app import SERVICE_NAMES
from server.bundle import load_bundle
from tests.conftest import LiveServer, free_port, start_server, stop_server

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"
PUBLIC_SERVICES = [name for name in SERVICE_NAMES if name != "sift.v1.AdminService"]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are not installed"
)


@pytest.fixture(scope="module")
def node_client() -> list[str]:
    """`node client.js`, after `npm ci` from the committed lockfile; skipped while node_modules is at least
    as new as the lockfile (npm writes node_modules/.package-lock.json last)."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return ["node", str(NODE_DIR / "client.js")]


def test_calls_every_public_rpc(node_client: list[str], live_server: LiveServer, tiny_bundle: Path) -> None:
    done = subprocess.run(
        [*node_client, live_server.address], capture_output=True, text=True, timeout=60, cwd=NODE_DIR
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    assert out["health"] == {name: "SERVING" for name in ("", *PUBLIC_SERVICES)}

    categories = out["intent"]["categories"]
    assert 1 <= len(categories) <= 3
    probabilities = [c["probability"] for c in categories]
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-5
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(c["id"] and " > " in c["path"] for c in categories)
    assert categories[0]["id"].endswith("coffee-tables")  # the default query is "oak coffee table"
    version = out["intent"]["model_version"]
    assert version.startswith("tiny-")

    hits = out["search"]["hits"]
    assert len(hits) == 5 and all(h["product_id"] and h["category"] for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    if load_bundle(tiny_bundle).search_default_mode == "dense":  # cosine; BM25 and fused scores are not
        assert all(-1 <= s <= 1 for s in scores)

    embed = out["embed_query"]
    assert embed["dim"] == out["model_info"]["embedding_dim"] > 0 and math.isclose(
        embed["norm"], 1, rel_tol=1e-3
    )
    by_vector = out["search_by_vector"]
    assert by_vector["hits"] and all(
        h["category"].startswith(by_vector["category"]) for h in by_vector["hits"]
    )
    # Same query, as a vector or as text in dense mode.
    assert by_vector["hits"][0]["product_id"] == out["search_dense"]["hits"][0]["product_id"]

    relevance = out["relevance"]["scores"]
    assert len(relevance) == 4  # one per candidate, in request order
    assert all(0 <= s["score"] <= 1 and s["grade"].startswith("GRADE_") for s in relevance)
    by_title = {s["candidate"].get("title"): s for s in relevance}
    assert by_title[out["query"]]["grade"] == "GRADE_EXACT"  # the query itself as a title: exact by rule
    assert by_title["Nonstick Frying Pan"]["score"] < 0.5

    info = out["model_info"]
    assert info["bundle_version"] == info["model_version"] == version
    assert info["num_products"] > 0 and info["num_labels"] > 0
    assert {c["name"] for c in info["components"]} >= {"intent", "query_encoder", "relevance", "index"}
    assert isinstance(info["evaluation"], dict) and info["evaluation"]

    _check_batches(out["batches"], version)

    bad = out["invalid_argument"]
    assert bad["code"] == 3 and bad["code_name"] == "INVALID_ARGUMENT"
    assert bad["method"] == "/sift.v1.RetrievalService/Search" and bad["details"].startswith("k:")
    assert bad["echoed_request_id"] == bad["request_id"]


def _check_batches(batches: dict, version: str) -> None:
    intents = batches["classify_intent_batch"]
    assert [item["query"] for item in intents["items"]] == [
        "oak coffee table",
        "oak coffee tables",
        "velvet accent chair",
    ]  # request order
    tops = [item["categories"][0]["id"] for item in intents["items"]]
    assert tops[0] == tops[1] and tops[0].endswith("coffee-tables") and tops[2].endswith("accent-chairs")
    assert intents["model_version"] == batches["search_batch"]["model_version"] == version
    assert [len(hits) for hits in batches["search_batch"]["items"]] == [2, 2]
    assert batches["embed_query_batch"]["dims"] == [384] * 3
    assert batches["invalid_batch_item"] == {
        "code_name": "INVALID_ARGUMENT",
        "details": "items[1].query: must not be empty",
    }


def test_batch_calls_with_an_api_key(node_client: list[str], tiny_bundle: Path, tmp_path: Path) -> None:
    """--batch against a server that wants API keys: SIFT_API_KEY goes as the bearer key."""
    keys = tmp_path / "keys"
    keys.write_text("k3y-of-the-node-example-0123\n")
    server = start_server(tiny_bundle, "--api-keys", str(keys), "--metrics-port", "0")
    try:
        env = {**os.environ, "SIFT_API_KEY": "k3y-of-the-node-example-0123"}
        args = [*node_client, "--batch", server.address]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=NODE_DIR, env=env)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert set(out) == {"address", "query", "health", "batches"}
        _check_batches(out["batches"], out["batches"]["classify_intent_batch"]["model_version"])
        env["SIFT_API_KEY"] = ""
        refused = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=NODE_DIR, env=env)
        assert refused.returncode == 1 and "ClassifyIntentBatch failed: UNAUTHENTICATED" in refused.stderr
    finally:
        stop_server(server)


def test_exits_non_zero_when_a_call_fails(node_client: list[str]) -> None:
    done = subprocess.run(
        [*node_client, "--deadline-ms", "500", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "grpc.health.v1.Health/Check failed" in done.stderr
    assert "UNAVAILABLE" in done.stderr or "DEADLINE_EXCEEDED" in done.stderr
