"""examples/python_client.py: its CLI against a live server, its retry policy against a server that fails on
purpose, and its keepalive settings against sift-serve's ping enforcement."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from server._proto.sift.v1 import intent_pb2
from tests.conftest import LiveServer

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "python_client.py"


@pytest.fixture(scope="module")
def client() -> ModuleType:
    """The example imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("sift_python_client_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_cli_classifies_searches_and_scores(live_server: LiveServer) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--address",
            live_server.address,
            "--json",
            "-k",
            "5",
            "oak coffee table",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["model_version"].startswith("tiny-")
    assert out["intent"] and sum(c["probability"] for c in out["intent"]) <= 1 + 1e-5
    assert out["category_filter"] == out["intent"][0]["id"]  # the tiny model is confident about this one
    hits = out["hits"]
    assert len(hits) == 5 and all(h["category"].startswith(out["category_filter"]) for h in hits)
    relevance = [h["relevance"] for h in hits]
    assert all(0 <= r <= 1 for r in relevance) and relevance == sorted(relevance, reverse=True)
    assert all(h["grade"].startswith("GRADE_") for h in hits)

    text = subprocess.run(
        [sys.executable, str(SCRIPT), "--address", live_server.address, "velvet accent chair"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.returncode == 0 and "intent" in text.stdout and "re-ranked" in text.stdout


def test_request_id_reaches_the_server_log(client: ModuleType, live_server: LiveServer) -> None:
    """The server logs a refused call (here an invalid k) under the client's x-request-id, and echoes it."""
    with client.open_channel(live_server.address) as channel, pytest.raises(grpc.RpcError) as err:
        client.Sift(channel).search("oak", k=5000, request_id="example-rid-42")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("k:")
    assert ("x-request-id", "example-rid-42") in err.value.trailing_metadata()
    deadline = time.monotonic() + 5
    while '"request_id": "example-rid-42"' not in live_server.log():
        assert time.monotonic() < deadline, "the request id is not in the server log"
        time.sleep(0.05)


class Flaky:
    """ClassifyIntent that answers `code` to its first `failures` attempts (with `pushback` as
    grpc-retry-pushback-ms, as Sift's admission sends it), then succeeds."""

    def __init__(self, code: grpc.StatusCode, failures: int, pushback: str | None = None) -> None:
        self.code, self.failures, self.attempts, self.pushback = code, failures, 0, pushback
        self.lock = threading.Lock()

    def classify(
        self, request: intent_pb2.ClassifyIntentRequest, context: grpc.ServicerContext
    ) -> intent_pb2.ClassifyIntentResponse:
        with self.lock:
            self.attempts += 1
            fail = self.attempts <= self.failures
        if fail:
            if self.pushback is not None:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", self.pushback),))
            context.abort(self.code, f"attempt failed on purpose ({self.code.name})")
        return intent_pb2.ClassifyIntentResponse(
            categories=[intent_pb2.Category(id="x", path="X", probability=1.0)], model_version="flaky"
        )


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[Flaky]]]:
    """A plain grpc server with Sift's ClassifyIntent method; the test puts its Flaky into the list."""
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
    ("code", "failures", "outcome", "attempts", "pushback"),
    [
        (grpc.StatusCode.UNAVAILABLE, 2, grpc.StatusCode.OK, 3, None),  # a replica shutting down
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 3, grpc.StatusCode.OK, 4, None),  # --max-concurrent-requests
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 2, grpc.StatusCode.OK, 3, "20"),  # admission: back in 20 ms
        # A negative pushback means "do not retry"; gRPC's retry obeys the server.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 1, grpc.StatusCode.RESOURCE_EXHAUSTED, 1, "-1"),
        (grpc.StatusCode.CANCELLED, 1, grpc.StatusCode.CANCELLED, 1, None),  # core's code: not retried
        (grpc.StatusCode.UNAVAILABLE, 100, grpc.StatusCode.UNAVAILABLE, 4, None),  # maxAttempts, give up
        (grpc.StatusCode.INVALID_ARGUMENT, 1, grpc.StatusCode.INVALID_ARGUMENT, 1, None),  # never retried
        (grpc.StatusCode.DEADLINE_EXCEEDED, 1, grpc.StatusCode.DEADLINE_EXCEEDED, 1, None),  # never retried
    ],
)
def test_retry_policy(
    client: ModuleType,
    flaky_server: tuple[str, list[Flaky]],
    code: grpc.StatusCode,
    failures: int,
    outcome: grpc.StatusCode,
    attempts: int,
    pushback: str | None,
) -> None:
    address, behaviour = flaky_server
    flaky = Flaky(code, failures, pushback)
    behaviour.append(flaky)
    assert client.RETRY_POLICY["maxAttempts"] == 4
    with client.open_channel(address) as channel:
        sift = client.Sift(channel, deadline=5.0)
        if outcome == grpc.StatusCode.OK:
            assert sift.classify("oak").model_version == "flaky"
        else:
            with pytest.raises(grpc.RpcError) as err:
                sift.classify("oak")
            assert err.value.code() == outcome
    assert flaky.attempts == attempts


def test_keepalive_is_accepted_by_the_server(client: ModuleType, live_server: LiveServer) -> None:
    """sift-serve closes a connection that pings more than its enforcement allows (GOAWAY too_many_pings:
    the channel leaves READY; round_robin reconnects at once). The example's keepalive settings, with the
    ping interval cut to 1 s (grpc's floor) so the test is short, keep the connection through calls and an
    idle spell. The control channel, which also pings every second while idle (the server allows one idle
    ping per 30 s), is closed by the server after a few strikes."""
    ours = client.channel_options(keepalive_time_ms=1000, keepalive_timeout_ms=1000)
    idle_pings = client.channel_options(
        keepalive_time_ms=1000, keepalive_timeout_ms=1000, keepalive_without_calls=True
    )
    ready = grpc.ChannelConnectivity.READY

    def dropped(seen: list[grpc.ChannelConnectivity]) -> bool:
        """Whether the connection left READY once it had been READY."""
        return ready in seen and any(state != ready for state in seen[seen.index(ready) :])

    states: dict[str, list[grpc.ChannelConnectivity]] = {"ours": [], "idle_pings": []}
    channels = {
        "ours": client.open_channel(live_server.address, options=ours),
        "idle_pings": client.open_channel(live_server.address, options=idle_pings),
    }
    try:
        for name, channel in channels.items():
            channel.subscribe(states[name].append, try_to_connect=True)
            client.Sift(channel).classify("oak")
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # calls in flight on ours: pings interleave with answers
            client.Sift(channels["ours"]).classify("oak table")
        end = time.monotonic() + 20  # generous: a loaded CI machine delays the strikes
        while not dropped(states["idle_pings"]):  # ours idles meanwhile
            assert time.monotonic() < end, f"the server kept a connection pinging while idle: {states}"
            time.sleep(0.1)
        time.sleep(0.5)
        assert client.Sift(channels["ours"]).classify("oak").categories
    finally:
        for channel in channels.values():
            channel.close()
    assert states["ours"][-1] == ready and not dropped(states["ours"]), states["ours"]
