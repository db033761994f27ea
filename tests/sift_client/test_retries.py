"""Retries, pushback and call metadata, for real.

Against sift-serve whose admission refuses nearly everything beside a call in flight
(--admission-target-ms 0.001; --offload-rows 1 --offload-min-ms 0 put every model run on the model thread, so
calls overlap),
concurrent batch calls get RESOURCE_EXHAUSTED with grpc-retry-pushback-ms. The server's own counts of
attempts by status, against what the client saw, show whether the client retried. Against a plain gRPC
server that fails on purpose: which codes are retried, that a negative pushback stops retrying, and the
metadata every call carries."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from server._proto.sift.v1 import intent_pb2
from sift_client import AsyncClient, Client, RetryPolicy, SiftError
from tests.conftest import LiveServer, start_server, stop_server

CALLS = 16


@pytest.fixture(scope="module")
def busy_server(tiny_bundle: Path) -> Iterator[LiveServer]:
    server = start_server(
        tiny_bundle, "--admission-target-ms", "0.001", "--offload-rows", "1", "--offload-min-ms", "0"
    )
    yield server
    stop_server(server)


def _attempts(server: LiveServer) -> dict[str, int]:
    """ClassifyIntentBatch attempts the server has finished, by status code."""
    pattern = r'^sift_request_duration_seconds_count\{code="(\w+)",method="ClassifyIntentBatch"\} (\S+)$'
    return {code: int(float(n)) for code, n in re.findall(pattern, server.metrics(), re.M)}


def _round(server: LiveServer, retry: RetryPolicy) -> tuple[int, list[SiftError], int, int]:
    """CALLS concurrent batch calls from a fresh client (its own retry throttle): (calls answered, the
    errors, attempts answered OK, attempts refused) as the server counted them."""

    async def calls() -> list[object]:
        async with AsyncClient(server.address, deadline=30, retry=retry) as sift:
            batch = [f"oak coffee table {i}" for i in range(8)]
            return await asyncio.gather(
                *(sift.classify_intent_batch(batch) for _ in range(CALLS)), return_exceptions=True
            )

    before = _attempts(server)
    outcomes = asyncio.run(calls())
    after = _attempts(server)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(e, SiftError) for e in errors), errors
    ok = after.get("OK", 0) - before.get("OK", 0)
    refused = after.get("RESOURCE_EXHAUSTED", 0) - before.get("RESOURCE_EXHAUSTED", 0)
    return CALLS - len(errors), errors, ok, refused  # type: ignore[return-value]


def _until_refused(server: LiveServer, retry: RetryPolicy) -> tuple[int, list[SiftError], int, int]:
    for _ in range(20):  # overlap is likely but not certain on a loaded machine: go until there is some
        answered, errors, ok, refused = _round(server, retry)
        if refused:
            return answered, errors, ok, refused
    pytest.fail("the server refused no attempt in 20 rounds of concurrent calls")


def test_refusals_are_retried_after_the_pushback(busy_server: LiveServer) -> None:
    answered, errors, ok, refused = _until_refused(busy_server, RetryPolicy())
    assert ok == answered  # every call answered had exactly one attempt answered
    # Each call that failed in the end had its last attempt refused; more refusals than failures means
    # refused attempts were tried again.
    assert refused > len(errors)
    assert all(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED for e in errors)


def test_without_retries_every_refusal_reaches_the_caller(busy_server: LiveServer) -> None:
    answered, errors, ok, refused = _until_refused(busy_server, RetryPolicy(max_attempts=1))
    assert ok == answered and refused == len(errors) > 0
    for error in errors:
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "server busy" in error.message
        assert error.pushback_ms is not None and error.pushback_ms > 0


class Flaky:
    """ClassifyIntent answering `code` (with `pushback` as grpc-retry-pushback-ms) to its first `failures`
    attempts, then an answer; records each attempt's metadata."""

    def __init__(self, code: grpc.StatusCode, failures: int, pushback: str | None = None) -> None:
        self.code, self.failures, self.pushback = code, failures, pushback
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def classify(
        self, request: intent_pb2.ClassifyIntentRequest, context: grpc.ServicerContext
    ) -> intent_pb2.ClassifyIntentResponse:
        with self.lock:
            self.metadata.append(dict(context.invocation_metadata()))
            fail = len(self.metadata) <= self.failures
        if fail:
            if self.pushback is not None:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", self.pushback),))
            context.abort(self.code, f"attempt failed on purpose ({self.code.name})")
        return intent_pb2.ClassifyIntentResponse(
            categories=[intent_pb2.Category(id="x", path="X", probability=1.0)], model_version="flaky"
        )


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[Flaky]]]:
    behaviour: list[Flaky] = []
    handler = grpc.method_handlers_generic_handler(
        "sift.v1.IntentService",
        {
            "ClassifyIntent": grpc.unary_unary_rpc_method_handler(
                lambda request, context: behaviour[0].classify(request, context),
                request_deserializer=intent_pb2.ClassifyIntentRequest.FromString,
                response_serializer=intent_pb2.ClassifyIntentResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", behaviour
    server.stop(0)


@pytest.mark.parametrize(
    ("code", "failures", "pushback", "outcome", "attempts"),
    [
        (grpc.StatusCode.UNAVAILABLE, 2, None, grpc.StatusCode.OK, 3),  # a replica stopping
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 2, "20", grpc.StatusCode.OK, 3),  # admission: back in 20 ms
        # A negative pushback means "do not retry": gRPC's retry obeys the server.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 1, "-1", grpc.StatusCode.RESOURCE_EXHAUSTED, 1),
        (grpc.StatusCode.UNAVAILABLE, 100, None, grpc.StatusCode.UNAVAILABLE, 4),  # maxAttempts, give up
        (grpc.StatusCode.CANCELLED, 1, None, grpc.StatusCode.CANCELLED, 1),  # core's code: not retried
        (grpc.StatusCode.INVALID_ARGUMENT, 1, None, grpc.StatusCode.INVALID_ARGUMENT, 1),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 1, None, grpc.StatusCode.DEADLINE_EXCEEDED, 1),
    ],
)
def test_retry_policy(
    flaky_server: tuple[str, list[Flaky]],
    code: grpc.StatusCode,
    failures: int,
    pushback: str | None,
    outcome: grpc.StatusCode,
    attempts: int,
) -> None:
    address, behaviour = flaky_server
    flaky = Flaky(code, failures, pushback)
    behaviour.append(flaky)
    with Client(address, deadline=10) as sift:
        if outcome == grpc.StatusCode.OK:
            assert sift.classify_intent("oak").model_version == "flaky"
        else:
            with pytest.raises(SiftError) as err:
                sift.classify_intent("oak")
            assert err.value.code == outcome
            assert err.value.pushback_ms == (int(pushback) if pushback else None)
    assert len(flaky.metadata) == attempts


def test_every_attempt_carries_the_key_request_id_and_trace(flaky_server: tuple[str, list[Flaky]]) -> None:
    address, behaviour = flaky_server
    flaky = Flaky(grpc.StatusCode.UNAVAILABLE, 1)
    behaviour.append(flaky)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with Client(address, deadline=10, api_key="k3y-of-the-search-stack-0123") as sift:
        sift.classify_intent("oak", request_id="rid-1", traceparent=traceparent)
        sift.classify_intent("oak")
    first, retried, other = flaky.metadata
    assert retried.pop("grpc-previous-rpc-attempts") == "1" and first == retried  # the same call, again
    assert first["authorization"] == "Bearer k3y-of-the-search-stack-0123"
    assert first["x-request-id"] == "rid-1" and first["traceparent"] == traceparent
    assert "traceparent" not in other and len(other["x-request-id"]) == 32  # one made up per call
