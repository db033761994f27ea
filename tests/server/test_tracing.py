"""OpenTelemetry tracing against a real OTLP/gRPC receiver (built from opentelemetry-proto's collector
service): each call's span arrives with the client's trace id and parent, and its featurize, model, index
and rules steps beneath it, over gRPC and HTTP. Off, the server loads nothing of OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from benchmarks.otlp_receiver import SERVER_KIND, Received, attributes, start_receiver, tree
from server._proto.sift.v1 import intent_pb2, intent_pb2_grpc, relevance_pb2, relevance_pb2_grpc
from tests.conftest import LiveServer, free_port, start_server, stop_server


def _traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
def traced(tiny_bundle: Path) -> Iterator[tuple[LiveServer, str, Received]]:
    receiver, port, received = start_receiver()
    http_port = free_port()
    patch = pytest.MonkeyPatch()
    patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 100 ms, not every 5 s
    server = start_server(
        tiny_bundle,
        "--otlp-endpoint",
        f"127.0.0.1:{port}",
        "--http-port",
        str(http_port),
        "--cache-size",
        "16",
    )
    patch.undo()
    yield server, f"http://127.0.0.1:{http_port}", received
    stop_server(server)
    receiver.stop(0)


def _call_span(received: Received, trace_id: str) -> tuple[object, list]:
    assert received.wait_for(
        lambda: any(s.kind == SERVER_KIND and s.trace_id.hex() == trace_id for _, s in received.spans), 20
    ), f"no call span of trace {trace_id}"
    spans = received.trace(trace_id)
    call = next(s for s in spans if s.kind == SERVER_KIND)
    return call, [s for s in spans if s is not call]


def test_a_grpc_call_is_a_span_under_the_clients_with_its_steps(
    traced: tuple[LiveServer, str, Received],
) -> None:
    server, _, received = traced
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with server.channel() as channel:
        relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(
            relevance_pb2.ScoreRelevanceRequest(
                query="oak coffee table",
                candidates=[
                    relevance_pb2.Candidate(title="Walnut Round Coffee Table"),
                    relevance_pb2.Candidate(title="Nonstick Frying Pan"),
                    relevance_pb2.Candidate(title="oak coffee table"),
                ],
            ),
            metadata=(("traceparent", _traceparent(trace_id, parent)),),
        )
    call, steps = _call_span(received, trace_id)
    assert call.name == "sift.v1.RelevanceService/ScoreRelevance"
    assert call.parent_span_id.hex() == parent
    attrs = attributes(call)
    assert attrs["rpc.system"] == "grpc" and attrs["rpc.method"] == "ScoreRelevance"
    assert attrs["sift.request.candidates.count"] == 3 and attrs["sift.status_code"] == "OK"
    assert attrs["sift.model_version"].startswith("tiny-")
    assert "oak" not in str(attrs)  # the query is the user's: never on a span
    names = [s.name for s in steps]
    assert {"featurize", "model", "rules"} <= set(names)
    assert all(s.parent_span_id == call.span_id for s in steps)
    models = {attributes(s)["sift.model"] for s in steps if s.name == "model"}
    assert {"query_encoder", "intent", "relevance"} <= models
    rules = [attributes(s) for s in steps if s.name == "rules"]
    assert {r["sift.stage"] for r in rules} == {"pre", "post"} and rules[0]["sift.candidates"] == 3
    assert call.start_time_unix_nano <= min(s.start_time_unix_nano for s in steps)
    assert call.end_time_unix_nano >= max(s.end_time_unix_nano for s in steps)
    shown = tree(received.trace(trace_id))
    assert shown.startswith(f"trace {trace_id}") and "└─ sift.v1.RelevanceService/ScoreRelevance" in shown


def test_an_http_call_takes_the_traceparent_header(traced: tuple[LiveServer, str, Received]) -> None:
    _, url, received = traced
    trace_id, parent = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
    reply = httpx.post(
        url + "/sift.v1.RetrievalService/Search",
        json={"query": "oak coffee table", "k": 3, "mode": "SEARCH_MODE_HYBRID"},
        headers={"traceparent": _traceparent(trace_id, parent)},
    )
    assert reply.status_code == 200
    call, steps = _call_span(received, trace_id)
    assert call.parent_span_id.hex() == parent
    assert attributes(call)["rpc.system"] == "http" and attributes(call)["sift.request.k"] == 3
    index = [attributes(s) for s in steps if s.name == "index"]
    assert index == [{"sift.mode": "hybrid", "sift.k": 3, "sift.filtered": False}]
    assert [attributes(s)["sift.model"] for s in steps if s.name == "model"] == ["query_student"]


def test_a_cache_hit_and_a_refusal_show_on_the_call_span(traced: tuple[LiveServer, str, Received]) -> None:
    server, _, received = traced
    ids = ["6bf92f3577b34da6a3ce929d0e0e4736", "7bf92f3577b34da6a3ce929d0e0e4736"]
    with server.channel() as channel:
        stub = intent_pb2_grpc.IntentServiceStub(channel)
        for trace_id in ids:
            stub.ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query="linen curtains"),
                metadata=(("traceparent", _traceparent(trace_id, "20f067aa0ba902b7")),),
            )
        with pytest.raises(grpc.RpcError):
            stub.ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query=""),
                metadata=(
                    ("traceparent", _traceparent("8bf92f3577b34da6a3ce929d0e0e4736", "30f067aa0ba902b7")),
                ),
            )
    (first, first_steps), (second, second_steps) = (_call_span(received, t) for t in ids)
    assert attributes(first)["sift.cache_hit"] is False and "model" in [s.name for s in first_steps]
    assert attributes(second)["sift.cache_hit"] is True and "model" not in [s.name for s in second_steps]
    refused, _ = _call_span(received, "8bf92f3577b34da6a3ce929d0e0e4736")
    assert attributes(refused)["sift.status_code"] == "INVALID_ARGUMENT"


def test_a_call_without_traceparent_starts_its_own_trace(traced: tuple[LiveServer, str, Received]) -> None:
    server, _, received = traced
    before = {s.trace_id for _, s in received.spans}
    with server.channel() as channel:
        intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
            intent_pb2.ClassifyIntentRequest(query="lamp")
        )
    assert received.wait_for(
        lambda: any(s.kind == SERVER_KIND and s.trace_id not in before for _, s in received.spans), 20
    )
    call = next(s for _, s in received.spans if s.kind == SERVER_KIND and s.trace_id not in before)
    assert call.parent_span_id == b"" and len(call.trace_id) == 16


def test_tracing_off_loads_nothing_of_opentelemetry() -> None:
    code = (
        "import sys, asyncio; import server.__main__, server.app; from server.config import Settings; "
        "server.app.SiftServer(Settings(_cli_parse_args=[])); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_call_its_client_did_not_sample_is_not_traced(traced: tuple[LiveServer, str, Received]) -> None:
    server, _, received = traced
    unsampled, sampled = "9af92f3577b34da6a3ce929d0e0e4736", "9bf92f3577b34da6a3ce929d0e0e4736"
    with server.channel() as channel:
        stub = intent_pb2_grpc.IntentServiceStub(channel)
        for trace_id, flags in ((unsampled, "00"), (sampled, "01")):
            stub.ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query="desk lamp"),
                metadata=(("traceparent", f"00-{trace_id}-40f067aa0ba902b7-{flags}"),),
            )
    _call_span(received, sampled)  # exported after the unsampled call's spans would have been
    assert received.trace(unsampled) == []
