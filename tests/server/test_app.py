"""A real sift-serve process on free ports, driven through real stubs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server._proto.sift.v1 import (
    common_pb2,
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.app import SERVICE_NAMES
from server.bundle import load_bundle
from tests.conftest import LiveServer, start_server, stop_server

SERVICES = (
    "sift.v1.IntentService",
    "sift.v1.RelevanceService",
    "sift.v1.RetrievalService",
    "sift.v1.InfoService",
    "sift.v1.AdminService",
)


@pytest.fixture(scope="module")
def channel(live_server: LiveServer) -> grpc.Channel:
    with live_server.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def product(tiny_bundle: Path) -> tuple[str, str, str]:
    """(id, title, category id) of a product in the bundle."""
    bundle = load_bundle(tiny_bundle)
    row = 42
    return (
        bundle.products.ids[row],
        bundle.products.titles[row],
        bundle.labels[bundle.products.categories[row]].id,
    )


def test_service_names_match_protos() -> None:
    assert SERVICE_NAMES == SERVICES


def test_health_per_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICES):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=name)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="sift.v1.Nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= names


def test_classify_intent(channel: grpc.Channel, product: tuple[str, str, str]) -> None:
    _, title, category = product
    reply = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
        intent_pb2.ClassifyIntentRequest(query=title, top_k=3)
    )
    assert reply.categories[0].id == category
    assert len(reply.categories) == 3 and reply.source == common_pb2.ANSWER_SOURCE_MODEL
    probs = [c.probability for c in reply.categories]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert reply.model_version.startswith("tiny-")


def test_classify_intent_rule(channel: grpc.Channel) -> None:
    reply = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
        intent_pb2.ClassifyIntentRequest(query="Area Rugs")
    )
    assert reply.source == common_pb2.ANSWER_SOURCE_RULE and reply.rule == "exact_query"
    assert [c.id for c in reply.categories] == ["rugs/area-rugs"] and reply.categories[0].probability == 1.0


def test_search_finds_product(channel: grpc.Channel, product: tuple[str, str, str]) -> None:
    pid, title, category = product
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    reply = stub.Search(retrieval_pb2.SearchRequest(query=title, k=10))
    assert pid in [h.product_id for h in reply.hits] and len(reply.hits) == 10
    scores = [h.score for h in reply.hits]
    assert scores == sorted(scores, reverse=True)
    filtered = stub.Search(retrieval_pb2.SearchRequest(query=title, k=5, category=category.split("/")[0]))
    assert all(h.category.startswith(category.split("/")[0] + "/") for h in filtered.hits)


def test_embed_then_search_by_vector(channel: grpc.Channel, product: tuple[str, str, str]) -> None:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    embedded = stub.EmbedQuery(retrieval_pb2.EmbedQueryRequest(query=product[1]))
    assert len(embedded.vector) == 384
    assert abs(np.linalg.norm(embedded.vector) - 1) < 1e-3
    by_text = stub.Search(
        retrieval_pb2.SearchRequest(query=product[1], k=5, mode=retrieval_pb2.SEARCH_MODE_DENSE)
    )
    by_vector = stub.Search(
        retrieval_pb2.SearchRequest(vector=retrieval_pb2.QueryVector(values=embedded.vector), k=5)
    )
    assert [h.product_id for h in by_text.hits] == [h.product_id for h in by_vector.hits]


def test_score_relevance(channel: grpc.Channel, product: tuple[str, str, str]) -> None:
    pid, title, _ = product
    request = relevance_pb2.ScoreRelevanceRequest(
        query=title,
        candidates=[
            relevance_pb2.Candidate(product_id=pid),
            relevance_pb2.Candidate(title="Enameled Cast Iron Dutch Oven with Lid"),
            relevance_pb2.Candidate(title=title),
        ],
    )
    reply = relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(request)
    assert len(reply.scores) == 3
    own, other, same = reply.scores
    assert own.grade == relevance_pb2.GRADE_EXACT and own.score > other.score
    assert other.grade == relevance_pb2.GRADE_IRRELEVANT
    assert same.source == common_pb2.ANSWER_SOURCE_RULE and same.score == 1.0
    assert "-> exact" in same.rule  # the mined golden rule names its conditions and grade
    assert all(s.rule == "" for s in reply.scores if s.source == common_pb2.ANSWER_SOURCE_MODEL)
    assert all(0 <= s.score <= 1 for s in reply.scores)


@pytest.mark.parametrize("mode", ["DENSE", "LEXICAL", "HYBRID"])
def test_every_search_mode_finds_a_product_by_its_title(
    channel: grpc.Channel, product: tuple[str, str, str], mode: str
) -> None:
    pid, title, category = product
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    wire_mode = retrieval_pb2.SearchMode.Value(f"SEARCH_MODE_{mode}")
    reply = stub.Search(retrieval_pb2.SearchRequest(query=title, k=10, mode=wire_mode))
    assert pid in [h.product_id for h in reply.hits]
    scores = [h.score for h in reply.hits]
    assert scores == sorted(scores, reverse=True)
    top = category.split("/")[0]
    filtered = stub.Search(retrieval_pb2.SearchRequest(query=title, k=5, category=top, mode=wire_mode))
    assert filtered.hits and all(h.category.startswith(top + "/") for h in filtered.hits)


def test_model_info(channel: grpc.Channel, tiny_bundle: Path) -> None:
    reply = info_pb2_grpc.InfoServiceStub(channel).GetModelInfo(info_pb2.GetModelInfoRequest())
    bundle = load_bundle(tiny_bundle)
    assert reply.bundle_version == reply.model_version == bundle.version
    assert {c.name for c in reply.components} == {
        "intent",
        "query_encoder",
        "query_student",
        "query_static",
        "relevance",
        "index",
        "lexical",
    }
    assert list(reply.search_modes) == ["dense", "lexical", "hybrid"]
    assert reply.search_default_mode == bundle.evaluation["retrieval"]["search_modes"]["default_mode"]
    assert [label.id for label in reply.labels] == [label.id for label in bundle.labels]
    assert reply.embedding_dim == 384 and reply.num_products == len(bundle.products.ids)
    assert reply.evaluation["intent"]["quantization"]["score"] >= 0.995


BAD_REQUESTS = [
    ("intent", intent_pb2.ClassifyIntentRequest(query=""), grpc.StatusCode.INVALID_ARGUMENT, "query"),
    ("intent", intent_pb2.ClassifyIntentRequest(query="x" * 600), grpc.StatusCode.INVALID_ARGUMENT, "query"),
    (
        "intent",
        intent_pb2.ClassifyIntentRequest(query="oak", top_k=-3),
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_k",
    ),
    (
        "intent",
        intent_pb2.ClassifyIntentRequest(query="oak", top_k=999),
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_k",
    ),
    ("search", retrieval_pb2.SearchRequest(query="oak", k=1001), grpc.StatusCode.INVALID_ARGUMENT, "k"),
    ("search", retrieval_pb2.SearchRequest(query="oak", k=-1), grpc.StatusCode.INVALID_ARGUMENT, "k"),
    ("search", retrieval_pb2.SearchRequest(k=3), grpc.StatusCode.INVALID_ARGUMENT, "query"),
    (
        "search",
        retrieval_pb2.SearchRequest(vector=retrieval_pb2.QueryVector(values=[1.0] * 3)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vector",
    ),
    (
        "search",
        retrieval_pb2.SearchRequest(query="oak", category="nope"),
        grpc.StatusCode.NOT_FOUND,
        "category",
    ),
    ("search", retrieval_pb2.SearchRequest(query="oak", mode=7), grpc.StatusCode.INVALID_ARGUMENT, "mode"),
    (
        "search",
        retrieval_pb2.SearchRequest(
            vector=retrieval_pb2.QueryVector(values=[1.0] * 384), mode=retrieval_pb2.SEARCH_MODE_LEXICAL
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "mode",
    ),
    ("embed", retrieval_pb2.EmbedQueryRequest(query=" "), grpc.StatusCode.INVALID_ARGUMENT, "query"),
    (
        "relevance",
        relevance_pb2.ScoreRelevanceRequest(
            query="oak", candidates=[relevance_pb2.Candidate(title="t")] * 1001
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidates",
    ),
    (
        "relevance",
        relevance_pb2.ScoreRelevanceRequest(
            query="oak", candidates=[relevance_pb2.Candidate(product_id="nope")]
        ),
        grpc.StatusCode.NOT_FOUND,
        "candidates[0].product_id",
    ),
]


@pytest.mark.parametrize(("kind", "request_", "code", "field"), BAD_REQUESTS)
def test_bad_input_gets_status_naming_field(
    channel: grpc.Channel, kind: str, request_: object, code: grpc.StatusCode, field: str
) -> None:
    call = {
        "intent": intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent,
        "search": retrieval_pb2_grpc.RetrievalServiceStub(channel).Search,
        "embed": retrieval_pb2_grpc.RetrievalServiceStub(channel).EmbedQuery,
        "relevance": relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance,
    }[kind]
    with pytest.raises(grpc.RpcError) as err:
        call(request_)
    assert err.value.code() == code
    assert err.value.details().startswith(f"{field}:")
    # ...and the server goes on serving
    ok = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
        intent_pb2.ClassifyIntentRequest(query="oak")
    )
    assert ok.categories


def test_metrics_endpoint(live_server: LiveServer, channel: grpc.Channel, tiny_bundle: Path) -> None:
    intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(intent_pb2.ClassifyIntentRequest(query="lamp"))
    text = live_server.metrics()
    assert 'sift_request_duration_seconds_count{code="OK",method="ClassifyIntent"}' in text
    assert (
        'sift_request_duration_seconds_count{code="INVALID_ARGUMENT"' in text
        or "sift_requests_in_flight" in text
    )
    assert 'sift_inference_duration_seconds_count{model="intent"}' in text
    assert "sift_featurize_duration_seconds_count" in text
    schema = load_bundle(tiny_bundle).schema_version
    assert f'sift_bundle_info{{schema_version="{schema}",version="tiny-' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus); .ci/run installs it")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_graceful_shutdown_finishes_in_flight(tiny_bundle: Path) -> None:
    """SIGTERM under load: calls are still answered during the drain and every call a handler took is
    answered (the server's own account: none cut); the process exits 0. A call sent as the port closes
    gets UNAVAILABLE, or CANCELLED when gRPC core held it but no handler had taken it yet: either way
    it was not started, and a client may retry it on another replica."""
    server = start_server(tiny_bundle, "--drain-period", "1", "--grace-period", "5")
    outcomes: list[list[tuple[float, grpc.StatusCode]]] = [[] for _ in range(4)]

    def load(out: list[tuple[float, grpc.StatusCode]]) -> None:
        with server.channel() as ch:
            stub = relevance_pb2_grpc.RelevanceServiceStub(ch)
            request = relevance_pb2.ScoreRelevanceRequest(
                query="oak table",
                candidates=[relevance_pb2.Candidate(title=f"oak table {i}") for i in range(300)],
            )
            while True:  # like a client that stops sending here once the server goes away
                try:
                    stub.ScoreRelevance(request, timeout=10)
                    out.append((time.monotonic(), grpc.StatusCode.OK))
                except grpc.RpcError as e:
                    # Admission may shed one of the four heavy calls on a busy machine; a client retries
                    # that after the pushback, and this test is about the drain.
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        threading.Event().wait(0.05)
                        continue
                    out.append((time.monotonic(), e.code()))
                    return

    threads = [threading.Thread(target=load, args=(out,)) for out in outcomes]
    for t in threads:
        t.start()
    while sum(len(out) for out in outcomes) < 8:
        threading.Event().wait(0.05)
    sigterm = time.monotonic()
    assert stop_server(server) == 0
    for t in threads:
        t.join()
    for out in outcomes:
        *answered, (_, last_code) = out
        assert all(code == grpc.StatusCode.OK for _, code in answered)
        assert last_code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    during_drain = [at for out in outcomes for at, code in out if code == grpc.StatusCode.OK and at > sigterm]
    assert during_drain, "no call was answered during the drain period"
    log = server.log()
    assert "shutdown signal received" in log and " cut=0 " in log


def test_healthcheck_command(live_server: LiveServer) -> None:
    """The Docker HEALTHCHECK command: exit 0 on SERVING, non-zero when nothing answers."""
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.healthcheck",
            "--address",
            live_server.address,
            "--service",
            SERVICES[0],
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = subprocess.run(
        [sys.executable, "-m", "server.healthcheck", "--address", "127.0.0.1:1", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


def test_search_expansion_setting_reaches_the_loaded_index(tiny_bundle: Path) -> None:
    from server.app import _load_and_warm
    from server.config import Settings
    from server.runtime.index import SEARCH_EXPANSION
    from server.runtime.session import ThreadSettings

    bundle = _load_and_warm(tiny_bundle, Settings(search_expansion=200), ThreadSettings())
    assert bundle.index is not None and bundle.index.expansion == 200
    # Unset, the index keeps the expansion training measured it with.
    bundle = _load_and_warm(tiny_bundle, Settings(), ThreadSettings())
    assert bundle.index is not None and bundle.index.expansion == SEARCH_EXPANSION
