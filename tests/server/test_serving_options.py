"""Serving options on a live server: per-call timing in trailing metadata, the response cache, and the
micro-batcher, each answering exactly what the plain server answers."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from server._proto.sift.v1 import (
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.manifest import Manifest
from tests.conftest import LiveServer, start_server, stop_server

QUERIES = ["oak coffee table", "velvet chair", "brass lamp", "rug", "bath vanity", "oak coffee table"]


def _answers(channel: grpc.Channel) -> list[tuple]:
    intent = intent_pb2_grpc.IntentServiceStub(channel)
    search = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    out = []
    for q in QUERIES:
        cats = intent.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query=q, top_k=3), timeout=5).categories
        hits = search.Search(retrieval_pb2.SearchRequest(query=q, k=5), timeout=5).hits
        out.append((tuple((c.id, round(c.probability, 5)) for c in cats), tuple(h.product_id for h in hits)))
    return out


@pytest.fixture(scope="module")
def plain_answers(live_server: LiveServer) -> list[tuple]:
    with live_server.channel() as channel:
        return _answers(channel)


def test_timing_and_request_id_in_trailing_metadata(tiny_bundle: Path, live_server: LiveServer) -> None:
    request = intent_pb2.ClassifyIntentRequest(query="oak table")
    with live_server.channel() as channel:  # defaults: no timing, a server-made request id
        _, call = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent.with_call(request, timeout=5)
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] and not [k for k in trailing if k.startswith("sift-")]

    server = start_server(tiny_bundle, "--timing-metadata")
    try:
        with server.channel() as channel:
            stub = intent_pb2_grpc.IntentServiceStub(channel)
            metadata = (("x-request-id", "search-7f3a"),)
            _, call = stub.ClassifyIntent.with_call(request, timeout=5, metadata=metadata)
    finally:
        stop_server(server)
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] == "search-7f3a"  # the client's own id comes back
    timing = {k: int(v) for k, v in trailing.items() if k.startswith("sift-")}
    assert set(timing) == {"sift-featurize-us", "sift-queue-us", "sift-inference-us", "sift-total-us"}
    assert timing["sift-inference-us"] > 0 and timing["sift-featurize-us"] > 0
    assert timing["sift-total-us"] >= timing["sift-inference-us"] + timing["sift-featurize-us"]


def test_cache_answers_what_the_models_answer_and_counts_hits(
    tiny_bundle: Path, plain_answers: list[tuple]
) -> None:
    server = start_server(tiny_bundle, "--cache-size", "100")
    try:
        with server.channel() as channel:
            assert _answers(channel) == plain_answers  # cold: misses, one repeated query hits
            assert _answers(channel) == plain_answers  # warm: all hits
            _, call = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent.with_call(
                intent_pb2.ClassifyIntentRequest(query="oak"), timeout=5
            )
            assert not [k for k, _ in call.trailing_metadata() if k.startswith("sift-")]
        lines = server.metrics().splitlines()
        hits = next(
            v
            for v in lines
            if v.startswith('sift_cache_requests_total{method="ClassifyIntent",result="hit"}')
        )
        assert float(hits.split()[-1]) == len(QUERIES) + 1
    finally:
        stop_server(server)


def test_batched_server_answers_concurrent_calls_exactly(
    tiny_bundle: Path, plain_answers: list[tuple]
) -> None:
    server = start_server(tiny_bundle, "--batch-max-size", "16", "--batch-max-wait-us", "2000")
    try:
        results: list[list[tuple]] = [[] for _ in range(6)]

        def client(out: list[tuple]) -> None:
            with server.channel() as channel:
                out.extend(_answers(channel))

        threads = [threading.Thread(target=client, args=(out,)) for out in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Dynamic int8 quantizes activations per run, so a row's scores move slightly with its batch-mates
        # (one reason batching is off by default): the same top answers, probabilities within 0.02.
        for got in results:
            for (cats, hits), (plain_cats, plain_hits) in zip(got, plain_answers, strict=True):
                assert cats[0][0] == plain_cats[0][0] and hits[0] == plain_hits[0]
                for (_, p), (_, plain_p) in zip(cats, plain_cats, strict=True):
                    assert abs(p - plain_p) < 0.02
        with server.channel() as channel:
            reply = relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(
                relevance_pb2.ScoreRelevanceRequest(
                    query="oak table",
                    candidates=[relevance_pb2.Candidate(title=f"oak table {i}") for i in range(40)],
                ),
                timeout=5,
            )
            assert len(reply.scores) == 40
        assert "sift_queue_duration_seconds_count" in server.metrics()
    finally:
        stop_server(server)


def test_two_workers_share_the_port_and_one_metrics_endpoint(
    tiny_bundle: Path, plain_answers: list[tuple]
) -> None:
    server = start_server(tiny_bundle, "--workers", "2", "--drain-period", "0")
    try:
        for _ in range(3):  # new connections: the kernel spreads them over the workers
            with server.channel() as channel:
                assert _answers(channel) == plain_answers
        lines = server.metrics().splitlines()
        count = next(
            v for v in lines if v.startswith('sift_request_duration_seconds_count{code="OK",method="Search"}')
        )
        assert float(count.split()[-1]) == 3 * len(QUERIES)  # summed over both workers' files
        schema = Manifest.read(tiny_bundle).schema_version
        assert any(v.startswith(f'sift_bundle_info{{schema_version="{schema}",version="tiny-') for v in lines)
    finally:
        assert stop_server(server) == 0
    log = server.log()
    assert log.count("serving bundle") == 2 and "all workers stopped (exit codes [0, 0])" in log


def test_bad_request_is_logged_as_a_warning_with_its_request_id_and_not_dumped(
    live_server: LiveServer,
) -> None:
    import json

    secret = "private-query-text-" + "z" * 5000
    with live_server.channel() as channel, pytest.raises(grpc.RpcError):
        intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
            intent_pb2.ClassifyIntentRequest(query=secret),
            timeout=5,
            metadata=(("x-request-id", "bad-req-1"),),
        )
    lines = [json.loads(line) for line in live_server.log().splitlines() if '"bad-req-1"' in line]
    assert [(e["level"], e["request_id"]) for e in lines] == [("WARNING", "bad-req-1")]
    assert (
        "query: has 5019 characters" in lines[0]["message"] and "private-query-text" not in live_server.log()
    )


def test_max_connection_age_makes_clients_reconnect_without_failing_calls(tiny_bundle: Path) -> None:
    """--max-connection-age: the server sends GOAWAY to an old connection; the channel reconnects and no
    call fails, so long-lived channels move to replicas added since."""
    server = start_server(tiny_bundle, "--max-connection-age", "0.5", "--grace-period", "1")
    states: list[grpc.ChannelConnectivity] = []
    try:
        with server.channel() as channel:
            channel.subscribe(states.append)
            stub = intent_pb2_grpc.IntentServiceStub(channel)
            pause = threading.Event()
            for _ in range(30):  # ~3 s of calls across several connection lifetimes
                reply = stub.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query="oak"), timeout=5)
                assert reply.categories
                pause.wait(0.1)
        ready = [s for s in states if s == grpc.ChannelConnectivity.READY]
        assert len(ready) >= 2, states  # it reconnected at least once
    finally:
        stop_server(server)
