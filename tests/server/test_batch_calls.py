"""The batch RPCs on a live sift-serve, through the generated stubs: answers in request order, one model
run per batch (the server's own inference metrics), and a bad item refusing the call with its name."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest

from server._proto.sift.v1 import intent_pb2, intent_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tests.conftest import LiveServer

QUERIES = ["oak coffee table", "velvet accent chair", "blue outdoor rug", "walnut desk lamp"]


@pytest.fixture(scope="module")
def channel(live_server: LiveServer) -> Iterator[grpc.Channel]:
    with live_server.channel() as ch:
        yield ch


def _inference_runs(server: LiveServer, model: str) -> tuple[float, float]:
    """(model runs, rows) so far, from sift_inference_batch_size{model=...}."""
    text = server.metrics()
    count = re.search(rf'^sift_inference_batch_size_count{{model="{model}"}} (\S+)$', text, re.M)
    total = re.search(rf'^sift_inference_batch_size_sum{{model="{model}"}} (\S+)$', text, re.M)
    return (float(count[1]), float(total[1])) if count and total else (0.0, 0.0)


def test_classify_intent_batch_is_one_model_run(channel: grpc.Channel, live_server: LiveServer) -> None:
    stub = intent_pb2_grpc.IntentServiceStub(channel)
    items = [intent_pb2.ClassifyIntentRequest(query=q, top_k=2) for q in QUERIES * 8]
    before = _inference_runs(live_server, "intent")
    reply = stub.ClassifyIntentBatch(intent_pb2.ClassifyIntentBatchRequest(items=items), timeout=10)
    after = _inference_runs(live_server, "intent")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 32)
    assert len(reply.items) == 32 and reply.model_version.startswith("tiny-")
    for query, item in zip(QUERIES * 8, reply.items, strict=True):
        single = stub.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query=query, top_k=2), timeout=10)
        assert item.categories[0].id == single.categories[0].id and len(item.categories) == 2
        assert item.model_version == reply.model_version


def test_search_and_embed_batches(channel: grpc.Channel, live_server: LiveServer) -> None:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    embedded = stub.EmbedQueryBatch(
        retrieval_pb2.EmbedQueryBatchRequest(
            items=[retrieval_pb2.EmbedQueryRequest(query=q) for q in QUERIES]
        ),
        timeout=10,
    )
    assert [len(item.vector) for item in embedded.items] == [384] * 4
    before = _inference_runs(live_server, "query_student")
    items = [
        retrieval_pb2.SearchRequest(query=QUERIES[0], k=3, mode=retrieval_pb2.SEARCH_MODE_DENSE),
        retrieval_pb2.SearchRequest(query=QUERIES[1], k=4, mode=retrieval_pb2.SEARCH_MODE_LEXICAL),
        retrieval_pb2.SearchRequest(vector=retrieval_pb2.QueryVector(values=embedded.items[2].vector), k=5),
        retrieval_pb2.SearchRequest(query=QUERIES[3], k=2, mode=retrieval_pb2.SEARCH_MODE_HYBRID),
    ]
    reply = stub.SearchBatch(retrieval_pb2.SearchBatchRequest(items=items), timeout=10)
    after = _inference_runs(live_server, "query_student")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2)  # the dense and hybrid texts
    assert [len(item.hits) for item in reply.items] == [3, 4, 5, 2]
    lexical = stub.Search(items[1], timeout=10)
    assert reply.items[1].hits == lexical.hits


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        (
            "ClassifyIntentBatch",
            intent_pb2.ClassifyIntentBatchRequest(
                items=[intent_pb2.ClassifyIntentRequest(query="oak"), intent_pb2.ClassifyIntentRequest()]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "items[1].query: must not be empty",
        ),
        (
            "ClassifyIntentBatch",
            intent_pb2.ClassifyIntentBatchRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "items: must hold at least one item",
        ),
        (
            "SearchBatch",
            retrieval_pb2.SearchBatchRequest(items=[retrieval_pb2.SearchRequest(query="oak")] * 65),
            grpc.StatusCode.INVALID_ARGUMENT,
            "items: has 65 entries, more than the limit of 64",
        ),
        (
            "SearchBatch",
            retrieval_pb2.SearchBatchRequest(
                items=[
                    retrieval_pb2.SearchRequest(query="oak"),
                    retrieval_pb2.SearchRequest(query="oak", k=5000),
                ]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "items[1].k: must be between 1 and 1000 (0 for the default 10), got 5000",
        ),
        (
            "SearchBatch",
            retrieval_pb2.SearchBatchRequest(
                items=[retrieval_pb2.SearchRequest(query="oak", category="nope")]
            ),
            grpc.StatusCode.NOT_FOUND,
            "items[0].category: no category id or path matches 'nope'",
        ),
        (
            "EmbedQueryBatch",
            retrieval_pb2.EmbedQueryBatchRequest(items=[retrieval_pb2.EmbedQueryRequest(query=" ")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "items[0].query: must not be empty",
        ),
    ],
)
def test_a_bad_item_fails_the_call_naming_it(
    channel: grpc.Channel, method: str, request_: object, code: grpc.StatusCode, message: str
) -> None:
    service = "IntentService" if method.startswith("Classify") else "RetrievalService"
    call = channel.unary_unary(
        f"/sift.v1.{service}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as err:
        call(request_, timeout=10)
    assert err.value.code() == code and err.value.details() == message
