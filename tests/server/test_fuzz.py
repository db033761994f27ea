"""Property-based bad input against a live server: arbitrary and adversarial requests for every RPC, and
raw bytes on every method path. Each gets a documented status, never INTERNAL or UNKNOWN, and the server
keeps serving. Examples per test: FUZZ_EXAMPLES (default 150)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server._proto.sift.v1 import (
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.bundle import load_bundle
from tests.conftest import LiveServer

# What bad input may get; INTERNAL and UNKNOWN would mean a crash the server did not foresee.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
METHODS = (
    "/sift.v1.IntentService/ClassifyIntent",
    "/sift.v1.RelevanceService/ScoreRelevance",
    "/sift.v1.RetrievalService/Search",
    "/sift.v1.RetrievalService/EmbedQuery",
    "/sift.v1.InfoService/GetModelInfo",
    "/sift.v1.IntentService/ClassifyIntentBatch",
    "/sift.v1.RetrievalService/SearchBatch",
    "/sift.v1.RetrievalService/EmbedQueryBatch",
)

adversarial = st.sampled_from(
    [
        "",
        " \t\n",
        "\x00",
        "\x00oak\x07table\x1b[2J",
        "\u202etable\u202c",  # right-to-left override
        "e\u0301\u0301\u0301",  # stacked combining marks
        "\ufeff\u200b\u200d",  # BOM, zero-width space and joiner
        "\U0001fa91" * 300,  # astral-plane emoji
        "\ud7ff\ue000\uffff",
        "oak " * 200,
        "x" * 513,
        "x" * 100_000,
    ]
)
texts = st.one_of(st.text(max_size=600), adversarial)
ints = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 1000, 1001, 2**31 - 1]))
floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@pytest.fixture(scope="module")
def channel(live_server: LiveServer) -> Iterator[grpc.Channel]:
    with live_server.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def product_ids(tiny_bundle) -> list[str]:
    return list(load_bundle(tiny_bundle).products.ids[:50])


def _status(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _still_serving(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@FUZZ
@given(query=texts, top_k=ints, min_score=floats)
def test_classify_intent(channel: grpc.Channel, query: str, top_k: int, min_score: float) -> None:
    stub = intent_pb2_grpc.IntentServiceStub(channel)
    request = intent_pb2.ClassifyIntentRequest(query=query, top_k=top_k, min_score=min_score)
    assert _status(lambda: stub.ClassifyIntent(request, timeout=10)) in DOCUMENTED


@FUZZ
@given(data=st.data(), query=texts)
def test_score_relevance(
    channel: grpc.Channel, product_ids: list[str], data: st.DataObject, query: str
) -> None:
    candidate = st.one_of(
        st.builds(relevance_pb2.Candidate, product_id=st.sampled_from(product_ids)),  # duplicates too
        st.builds(relevance_pb2.Candidate, product_id=texts),  # unknown ids
        st.builds(relevance_pb2.Candidate, title=texts),
        st.builds(relevance_pb2.Candidate, product_id=st.sampled_from(product_ids), title=texts),
        st.just(relevance_pb2.Candidate()),  # neither
    )
    candidates = data.draw(st.lists(candidate, max_size=40))
    stub = relevance_pb2_grpc.RelevanceServiceStub(channel)
    request = relevance_pb2.ScoreRelevanceRequest(query=query, candidates=candidates)
    assert _status(lambda: stub.ScoreRelevance(request, timeout=10)) in DOCUMENTED


@FUZZ
@given(
    query=st.one_of(st.none(), texts),
    vector=st.one_of(st.none(), st.lists(floats, max_size=400)),
    k=ints,
    category=st.one_of(st.just(""), texts),
)
def test_search(
    channel: grpc.Channel, query: str | None, vector: list[float] | None, k: int, category: str
) -> None:
    request = retrieval_pb2.SearchRequest(k=k, category=category)
    if vector is not None:
        request.vector.values.extend(vector)
    elif query is not None:
        request.query = query
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    assert _status(lambda: stub.Search(request, timeout=10)) in DOCUMENTED


@FUZZ
@given(data=st.data(), queries=st.lists(texts, max_size=70))
def test_batches(channel: grpc.Channel, data: st.DataObject, queries: list[str]) -> None:
    """Items as varied as the single calls' fuzz, empty batches and batches over the 64-item limit."""
    intent = intent_pb2_grpc.IntentServiceStub(channel)
    retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    top_ks, ks = data.draw(st.lists(ints, min_size=len(queries), max_size=len(queries))), [0] * len(queries)
    if data.draw(st.booleans()):
        ks = data.draw(st.lists(ints, min_size=len(queries), max_size=len(queries)))
    classify = intent_pb2.ClassifyIntentBatchRequest(
        items=[
            intent_pb2.ClassifyIntentRequest(query=q, top_k=t) for q, t in zip(queries, top_ks, strict=True)
        ]
    )
    search = retrieval_pb2.SearchBatchRequest(
        items=[retrieval_pb2.SearchRequest(query=q, k=k) for q, k in zip(queries, ks, strict=True)]
    )
    embed = retrieval_pb2.EmbedQueryBatchRequest(
        items=[retrieval_pb2.EmbedQueryRequest(query=q) for q in queries]
    )
    assert _status(lambda: intent.ClassifyIntentBatch(classify, timeout=10)) in DOCUMENTED
    assert _status(lambda: retrieval.SearchBatch(search, timeout=10)) in DOCUMENTED
    assert _status(lambda: retrieval.EmbedQueryBatch(embed, timeout=10)) in DOCUMENTED


@FUZZ
@given(query=texts)
def test_embed_query(channel: grpc.Channel, query: str) -> None:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    request = retrieval_pb2.EmbedQueryRequest(query=query)
    assert _status(lambda: stub.EmbedQuery(request, timeout=10)) in DOCUMENTED


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=3000))
def test_raw_bytes_on_every_method(channel: grpc.Channel, method: str, payload: bytes) -> None:
    """Wire-level fuzz: bytes that may not be a protobuf at all, or one with invalid UTF-8 in a string."""
    call = channel.unary_unary(method)  # no serializers: the bytes go out as they are
    assert _status(lambda: call(payload, timeout=10)) in DOCUMENTED


def test_invalid_utf8_and_oversize_messages_get_clear_statuses(channel: grpc.Channel) -> None:
    call = channel.unary_unary(METHODS[0])
    with pytest.raises(grpc.RpcError) as bad_utf8:
        call(b"\n\x02\xff\xfe", timeout=10)  # field 1 (query), 2 bytes that are not UTF-8
    assert bad_utf8.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid sift.v1.ClassifyIntentRequest" in bad_utf8.value.details()
    with pytest.raises(grpc.RpcError) as huge:
        intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
            intent_pb2.ClassifyIntentRequest(query="x" * (5 << 20)), timeout=10
        )
    assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # over max_message_bytes (4 MiB)
    with pytest.raises(grpc.RpcError) as many:
        relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(
            relevance_pb2.ScoreRelevanceRequest(
                query="oak", candidates=[relevance_pb2.Candidate(title="oak")] * 1001
            ),
            timeout=10,
        )
    assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "candidates" in many.value.details()
    _still_serving(channel)


def test_server_still_serving_after_the_fuzz(channel: grpc.Channel) -> None:
    _still_serving(channel)
