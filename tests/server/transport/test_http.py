"""HTTP/JSON beside gRPC: a live sift-serve with --http-port, called with httpx (and curl), answers every call
as its gRPC twin does, with the same fields, the same errors mapped to HTTP statuses, health and OpenAPI."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format

from server._proto.sift.v1 import (
    admin_pb2,
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.admission import PUSHBACK_KEY
from server.app import SERVICES
from server.transport.http import error_response
from server.transport.status import HTTP_STATUS
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tests.server.test_app import BAD_REQUESTS

PATHS = {
    "intent": "/sift.v1.IntentService/ClassifyIntent",
    "search": "/sift.v1.RetrievalService/Search",
    "embed": "/sift.v1.RetrievalService/EmbedQuery",
    "relevance": "/sift.v1.RelevanceService/ScoreRelevance",
}


@pytest.fixture(scope="module")
def served(tiny_bundle: Path) -> Iterator[tuple[LiveServer, str]]:
    port = free_port()
    server = start_server(tiny_bundle, "--http-port", str(port))
    yield server, f"http://127.0.0.1:{port}"
    stop_server(server)


@pytest.fixture(scope="module")
def http(served: tuple[LiveServer, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def channel(served: tuple[LiveServer, str]) -> Iterator[grpc.Channel]:
    with served[0].channel() as ch:
        yield ch


def _as_json(message: object) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_every_call_answers_as_its_grpc_twin(http: httpx.Client, channel: grpc.Channel) -> None:
    intent = intent_pb2_grpc.IntentServiceStub(channel)
    retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    relevance = relevance_pb2_grpc.RelevanceServiceStub(channel)
    calls = [
        (intent.ClassifyIntent, intent_pb2.ClassifyIntentRequest(query="velvet accent chair", top_k=3)),
        (intent.ClassifyIntent, intent_pb2.ClassifyIntentRequest(query="Area Rugs")),  # answered by rule
        (
            intent.ClassifyIntentBatch,
            intent_pb2.ClassifyIntentBatchRequest(
                items=[intent_pb2.ClassifyIntentRequest(query=q) for q in ("oak table", "wool rug")]
            ),
        ),
        (retrieval.Search, retrieval_pb2.SearchRequest(query="oak coffee table", k=4, category="furniture")),
        (
            retrieval.Search,
            retrieval_pb2.SearchRequest(query="oak coffee table", k=3, mode=retrieval_pb2.SEARCH_MODE_HYBRID),
        ),
        (retrieval.EmbedQuery, retrieval_pb2.EmbedQueryRequest(query="oak coffee table")),
        (
            retrieval.SearchBatch,
            retrieval_pb2.SearchBatchRequest(
                items=[
                    retrieval_pb2.SearchRequest(query="oak coffee table", k=2),
                    retrieval_pb2.SearchRequest(query="wool rug", k=3, mode=retrieval_pb2.SEARCH_MODE_DENSE),
                ]
            ),
        ),
        (
            retrieval.EmbedQueryBatch,
            retrieval_pb2.EmbedQueryBatchRequest(
                items=[retrieval_pb2.EmbedQueryRequest(query=q) for q in ("oak table", "wool rug")]
            ),
        ),
        (
            relevance.ScoreRelevance,
            relevance_pb2.ScoreRelevanceRequest(
                query="oak coffee table",
                candidates=[
                    relevance_pb2.Candidate(title="Walnut Round Coffee Table"),
                    relevance_pb2.Candidate(title="oak coffee table"),
                ],
            ),
        ),
        (info_pb2_grpc.InfoServiceStub(channel).GetModelInfo, info_pb2.GetModelInfoRequest()),
    ]
    for stub_call, request in calls:
        path = stub_call._method.decode()  # /sift.v1.Service/Method, as gRPC names the call
        reply = http.post(path, content=json_format.MessageToJson(request))
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == _as_json(stub_call(request)), path
        assert reply.headers["x-request-id"]


def test_lower_camel_case_json_names_are_read_too(http: httpx.Client) -> None:
    snake = http.post(PATHS["intent"], json={"query": "oak table", "top_k": 2}).json()
    camel = http.post(PATHS["intent"], json={"query": "oak table", "topK": 2}).json()
    assert camel == snake and len(snake["categories"]) == 2


@pytest.mark.parametrize(("kind", "request_", "code", "field"), BAD_REQUESTS)
def test_bad_input_gets_the_grpc_status_as_http(
    http: httpx.Client, channel: grpc.Channel, kind: str, request_: object, code: grpc.StatusCode, field: str
) -> None:
    reply = http.post(PATHS[kind], content=json_format.MessageToJson(request_))
    assert reply.status_code == HTTP_STATUS[code] and reply.status_code in (400, 404)
    body = reply.json()
    assert body["code"] == code.name
    assert body["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "request: not a valid sift.v1.SearchRequest"),
        (b'{"query": "oak", "kk": 3}', "request: not a valid sift.v1.SearchRequest"),
        (b'{"query": 3}', "request: not a valid sift.v1.SearchRequest"),
        (b"\xff\xfe", "request: not a valid sift.v1.SearchRequest"),
    ],
)
def test_a_body_that_is_not_the_request_is_invalid_argument(
    http: httpx.Client, body: bytes, problem: str
) -> None:
    reply = http.post(PATHS["search"], content=body)
    assert reply.status_code == 400
    assert reply.json()["code"] == "INVALID_ARGUMENT" and reply.json()["message"].startswith(problem)


def test_deadline_request_id_and_size_limit(http: httpx.Client) -> None:
    late = http.post(PATHS["intent"], json={"query": "oak"}, headers={"x-timeout-ms": "0"})
    assert late.status_code == 504 and late.json()["code"] == "DEADLINE_EXCEEDED"
    bad = http.post(PATHS["intent"], json={"query": "oak"}, headers={"x-timeout-ms": "soon"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("x-timeout-ms:")
    mine = http.post(PATHS["intent"], json={"query": "oak"}, headers={"x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    huge = http.post(PATHS["intent"], json={"query": "x" * (4 * 1024 * 1024)})
    assert huge.status_code == 429 and huge.json()["code"] == "RESOURCE_EXHAUSTED"
    assert http.get(PATHS["intent"]).status_code == 405
    assert http.post("/sift.v1.IntentService/Nope", json={}).status_code == 404


def test_pushback_becomes_retry_after() -> None:
    refused = error_response(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", ((PUSHBACK_KEY, "1500"),))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2" and refused.headers[PUSHBACK_KEY] == "1500"
    assert json.loads(refused.body) == {"code": "RESOURCE_EXHAUSTED", "message": "busy"}


def test_health(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "SERVING"}
    assert http.get("/health", params={"service": "sift.v1.RetrievalService"}).status_code == 200
    unknown = http.get("/health", params={"service": "sift.v1.Nope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"
    check = http.post("/grpc.health.v1.Health/Check", json={"service": "sift.v1.IntentService"})
    assert check.json() == {"status": "SERVING"}


def test_admin_reload_over_http_from_localhost(http: httpx.Client, tiny_bundle: Path) -> None:
    reply = http.post("/sift.v1.AdminService/ReloadBundle", json={}, timeout=60)
    assert reply.status_code == 200, reply.text
    answer = json_format.Parse(reply.text, admin_pb2.ReloadBundleResponse())
    assert answer.bundle_version == answer.previous_version and answer.bundle_version.startswith("tiny-")
    missing = http.post("/sift.v1.AdminService/ReloadBundle", json={"path": "/nonexistent"}, timeout=60)
    assert missing.status_code == 400 and missing.json()["code"] == "FAILED_PRECONDITION"


def test_openapi_describes_every_call_served(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    methods = {
        f"/{s.full_name}/{m.name}"
        for s in SERVICES
        for m in s.pb2.DESCRIPTOR.services_by_name[s.name].methods
    }
    assert methods <= set(document["paths"]) and {"/health", "/grpc.health.v1.Health/Check"} <= set(
        document["paths"]
    )
    for path in methods:  # each is served: Sift answers it with its JSON error, not the router's 404
        reply = http.post(path, json={"path": "/nonexistent"}, timeout=60)
        assert reply.status_code == 400 and reply.json()["code"] in (
            "INVALID_ARGUMENT",
            "FAILED_PRECONDITION",
        )
    schemas = document["components"]["schemas"]
    refs = {ref for ref in _refs(document)}
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    search = schemas["sift.v1.SearchRequest"]["properties"]
    assert search["k"] == {"type": "integer", "format": "int32"}
    assert schemas["sift.v1.SearchMode"]["enum"][:2] == ["SEARCH_MODE_UNSPECIFIED", "SEARCH_MODE_DENSE"]
    assert "one of `query_input`" in search["vector"]["description"]


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_http_calls_are_counted_with_grpc_calls(served: tuple[LiveServer, str], http: httpx.Client) -> None:
    def ok_count() -> float:
        for line in served[0].metrics().splitlines():
            if line.startswith('sift_request_duration_seconds_count{code="OK",method="EmbedQuery"}'):
                return float(line.split()[-1])
        return 0.0

    before = ok_count()
    for _ in range(3):
        assert http.post(PATHS["embed"], json={"query": "lamp"}).status_code == 200
    assert ok_count() == before + 3


def test_curl(served: tuple[LiveServer, str]) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [
            curl,
            "-sS",
            "-X",
            "POST",
            f"{served[1]}{PATHS['search']}",
            "-d",
            '{"query": "oak coffee table", "k": 2}',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    hits = json.loads(out)["hits"]
    assert len(hits) == 2 and all(h["product_id"] for h in hits)


def test_health_turns_503_while_a_stopping_server_drains(tiny_bundle: Path) -> None:
    port = free_port()
    server = start_server(tiny_bundle, "--http-port", str(port), "--drain-period", "3")
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(url + "/health").status_code == 200
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while httpx.get(url + "/health").status_code != 503:
        assert time.monotonic() < deadline, "health never said NOT_SERVING"
        time.sleep(0.05)
    assert httpx.get(url + "/health").json() == {"status": "NOT_SERVING"}
    answered = httpx.post(url + PATHS["intent"], json={"query": "oak"})  # calls are answered while draining
    assert answered.status_code == 200
    assert server.process.wait(timeout=30) == 0
