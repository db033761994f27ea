"""sift_client against a live sift-serve on the tiny bundle: every call, sync and asyncio, typed results,
errors as SiftError naming the field, request ids, TLS and API keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sift_client import (
    TLS,
    AsyncClient,
    Candidate,
    Client,
    Embedding,
    Hits,
    Intent,
    IntentQuery,
    SearchQuery,
    SiftError,
)
from tests.conftest import LiveServer, start_server, stop_server
from tests.server.test_tls import pki  # noqa: F401  (the fixture: a CA, server and client certificates)

QUERIES = ["oak coffee table", "velvet accent chair", "Area Rugs"]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[Client]:
    with Client(live_server.address, deadline=10) as sift:
        sift.wait_until_serving(timeout=10)
        yield sift


def test_single_calls(client: Client) -> None:
    intent = client.classify_intent("oak coffee table", top_k=3)
    assert isinstance(intent, Intent) and intent.source == "model" and len(intent.categories) == 3
    assert intent.categories[0].id == "furniture/tables/coffee-tables"
    assert intent.model_version.startswith("tiny-")
    hits = client.search("oak coffee table", k=4, category="furniture", mode="dense")
    assert isinstance(hits, Hits) and len(hits.hits) == 4
    assert all(h.category.startswith("furniture/") for h in hits.hits)
    vector = client.embed_query("oak coffee table")
    assert isinstance(vector, Embedding) and len(vector.vector) == 384
    by_vector = client.search(vector=vector.vector, k=4, category="furniture")
    assert [h.product_id for h in by_vector.hits] == [h.product_id for h in hits.hits]
    scored = client.score_relevance(
        "oak coffee table", [hits.hits[0].product_id, Candidate(title="Nonstick Frying Pan")]
    )
    assert [s.grade in ("exact", "partial", "irrelevant") for s in scored.scores] == [True, True]
    assert [s.grade_name for s in scored.scores] == [s.grade for s in scored.scores]  # three grades
    assert scored.scores[1].score < 0.5
    info = client.get_model_info()
    assert info.bundle_version == intent.model_version and info.embedding_dim == 384
    assert info.labels and info.evaluation and "dense" in info.search_modes
    assert info.grades == ("irrelevant", "partial", "exact")


def test_batches_answer_in_request_order(client: Client) -> None:
    intents = client.classify_intent_batch([QUERIES[0], IntentQuery(QUERIES[1], top_k=2), QUERIES[2]])
    assert [i.categories[0].id for i in intents] == [
        "furniture/tables/coffee-tables",
        "furniture/living-room-seating/accent-chairs",
        "rugs/area-rugs",
    ]
    assert [i.source for i in intents] == ["model", "model", "rule"] and len(intents[1].categories) == 2
    vectors = client.embed_query_batch(QUERIES)
    assert [len(v.vector) for v in vectors] == [384] * 3
    searched = client.search_batch(
        [SearchQuery(QUERIES[0], k=2), SearchQuery(vector=vectors[1].vector, k=3), QUERIES[2]]
    )
    assert [len(s.hits) for s in searched] == [2, 3, 10]


def test_errors_carry_code_message_and_request_id(client: Client, live_server: LiveServer) -> None:
    with pytest.raises(SiftError) as err:
        client.classify_intent_batch(["oak", ""], request_id="client-rid-17")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.message == "items[1].query: must not be empty"
    assert err.value.request_id == "client-rid-17"  # echoed by the server
    deadline = time.monotonic() + 5
    while '"request_id": "client-rid-17"' not in live_server.log():
        assert time.monotonic() < deadline, "the request id is not in the server log"
        time.sleep(0.05)
    with pytest.raises(SiftError) as missing:
        client.search("oak", category="no/such/category")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and missing.value.message.startswith("category:")
    with pytest.raises(ValueError, match="not both"):
        client.search("oak", vector=[1.0])


def test_a_deadline_already_past_is_deadline_exceeded(client: Client) -> None:
    # A deadline a second in the past fails in gRPC core before the call is sent. A positive microsecond
    # raced the answer: core's deadline timer has millisecond slack, so now and then a call was answered.
    with pytest.raises(SiftError) as err:
        client.classify_intent_batch(["oak coffee table"] * 64, timeout=-1.0)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_async_client(live_server: LiveServer) -> None:
    async def calls() -> None:
        async with AsyncClient(live_server.address, deadline=10) as sift:
            await sift.wait_until_serving(timeout=10)
            batched, *singles = await asyncio.gather(
                sift.classify_intent_batch(QUERIES), *(sift.classify_intent(q) for q in QUERIES)
            )
            assert [b.categories[0].id for b in batched] == [s.categories[0].id for s in singles]
            searched = await sift.search_batch([SearchQuery(q, k=3, mode="lexical") for q in QUERIES])
            assert searched == [await sift.search(q, k=3, mode="lexical") for q in QUERIES]
            assert len((await sift.embed_query_batch(QUERIES))[2].vector) == 384
            assert (await sift.embed_query("oak")).model_version == batched[0].model_version
            assert len((await sift.score_relevance("oak", [Candidate(title="Oak Table")])).scores) == 1
            assert (await sift.get_model_info()).num_products > 0
            with pytest.raises(SiftError) as err:
                await sift.search_batch([SearchQuery("oak", k=5000)])
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.message.startswith("items[0].k: must be between 1 and 1000")

    asyncio.run(calls())


def test_tls_mtls_and_reload(tiny_bundle: Path, pki: dict[str, Path]) -> None:  # noqa: F811
    server = start_server(
        tiny_bundle,
        "--tls-cert", str(pki["server"]),
        "--tls-key", str(pki["server_key"]),
        "--tls-client-ca", str(pki["ca"]),
        "--metrics-port", "0",
        tls_ca=pki["ca"],
        tls_client=(pki["client_key"], pki["client"]),
    )  # fmt: skip
    try:
        tls = TLS(pki["ca"], cert=pki["client"], key=pki["client_key"])
        with Client(server.address, deadline=10, tls=tls) as sift:
            assert sift.classify_intent_batch(["oak coffee table"])[0].categories
            reloaded = sift.reload_bundle()  # from localhost: no admin token needed
            assert reloaded.bundle_version == reloaded.previous_version and reloaded.load_seconds > 0
        with Client(server.address, deadline=5, tls=TLS(pki["ca"])) as sift, pytest.raises(SiftError):
            sift.classify_intent("oak")  # no client certificate: the handshake fails
    finally:
        stop_server(server)


def test_api_key(tiny_bundle: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k3y-of-the-search-stack-0123\nk3y-for-intent-only-abcdefgh IntentService\n")
    server = start_server(tiny_bundle, "--api-keys", str(keys), "--metrics-port", "0")
    try:
        with Client(server.address, deadline=10, api_key="k3y-of-the-search-stack-0123") as sift:
            sift.wait_until_serving(timeout=10)
            assert sift.classify_intent_batch(["oak"])[0].categories
            assert sift.search_batch(["oak"])[0].hits
        with Client(server.address, deadline=10, api_key="k3y-for-intent-only-abcdefgh") as sift:
            assert sift.classify_intent("oak").categories
            with pytest.raises(SiftError) as denied:
                sift.embed_query_batch(["oak"])
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        with Client(server.address, deadline=10) as sift, pytest.raises(SiftError) as err:
            sift.classify_intent("oak")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stop_server(server)
