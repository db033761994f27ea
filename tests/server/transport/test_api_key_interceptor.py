"""--api-keys on a live server: missing and unknown keys get UNAUTHENTICATED (HTTP 401), a key without
rights PERMISSION_DENIED (403), over gRPC and HTTP alike; health and reflection stay open unless
--api-keys-all-services closes them; SIGHUP re-reads the file; keys work with TLS."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server._proto.sift.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tests.server.test_tls import pki  # noqa: F401  (the fixture)

ALL = "key-for-every-service-0001"
INTENT = "key-for-intent-only-00002"
LATER = "key-added-by-a-reload-003"
INTENT_PATH = "/sift.v1.IntentService/ClassifyIntent"
SEARCH_PATH = "/sift.v1.RetrievalService/Search"


def _bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def keyed(
    tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str, Path]]:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"{ALL}\n{INTENT} IntentService\n")
    port = free_port()
    server = start_server(tiny_bundle, "--api-keys", str(keys), "--http-port", str(port))
    yield server, f"http://127.0.0.1:{port}", keys
    stop_server(server)


def _grpc_code(
    server: LiveServer, metadata: tuple[tuple[str, str], ...], search: bool = False
) -> grpc.StatusCode:
    with server.channel() as channel:
        try:
            if search:
                retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
                    retrieval_pb2.SearchRequest(query="oak", k=2), metadata=metadata, timeout=10
                )
            else:
                intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
                    intent_pb2.ClassifyIntentRequest(query="oak"), metadata=metadata, timeout=10
                )
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


CASES = [
    ((), False, grpc.StatusCode.UNAUTHENTICATED, 401),
    (_bearer("not-a-key-of-this-server"), False, grpc.StatusCode.UNAUTHENTICATED, 401),
    ((("authorization", ALL),), False, grpc.StatusCode.UNAUTHENTICATED, 401),  # no Bearer scheme
    (_bearer(INTENT), True, grpc.StatusCode.PERMISSION_DENIED, 403),
    (_bearer(INTENT), False, grpc.StatusCode.OK, 200),
    (_bearer(ALL), True, grpc.StatusCode.OK, 200),
]


@pytest.mark.parametrize(("metadata", "search", "code", "status"), CASES)
def test_keys_over_grpc_and_http(
    keyed: tuple[LiveServer, str, Path],
    metadata: tuple[tuple[str, str], ...],
    search: bool,
    code: grpc.StatusCode,
    status: int,
) -> None:
    server, url, _ = keyed
    assert _grpc_code(server, metadata, search) == code
    body = {"query": "oak", "k": 2} if search else {"query": "oak"}
    reply = httpx.post(url + (SEARCH_PATH if search else INTENT_PATH), json=body, headers=dict(metadata))
    assert reply.status_code == status
    if status != 200:
        assert reply.json()["code"] == code.name
        assert ALL not in reply.text and INTENT not in reply.text


def test_refusals_say_what_is_wrong(keyed: tuple[LiveServer, str, Path]) -> None:
    url = keyed[1]
    missing = httpx.post(url + INTENT_PATH, json={"query": "oak"}).json()["message"]
    assert "needs an API key" in missing and "Bearer" in missing
    denied = httpx.post(url + SEARCH_PATH, json={"query": "oak"}, headers=dict(_bearer(INTENT)))
    assert denied.json()["message"] == "this API key may not call sift.v1.RetrievalService"
    assert 'sift_auth_refused_total{code="PERMISSION_DENIED"}' in keyed[0].metrics()


def test_health_reflection_and_admin_need_no_key(keyed: tuple[LiveServer, str, Path]) -> None:
    server, url, _ = keyed
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        assert any(reply.list_services_response.service for reply in replies)
        # AdminService keeps its own rule (localhost here): past the keys, the bad path is what it refuses.
        with pytest.raises(grpc.RpcError) as refused:
            admin_pb2_grpc.AdminServiceStub(channel).ReloadBundle(
                admin_pb2.ReloadBundleRequest(path="/nonexistent"), timeout=30
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert httpx.get(url + "/health").status_code == 200
    assert httpx.get(url + "/openapi.json").status_code == 200


def _wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_sighup_rereads_the_keys_and_a_bad_file_keeps_them(keyed: tuple[LiveServer, str, Path]) -> None:
    server, url, keys = keyed
    original = keys.read_text()
    try:
        keys.write_text(f"{LATER}\n")
        server.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: _grpc_code(server, _bearer(LATER)) == grpc.StatusCode.OK)
        assert _grpc_code(server, _bearer(ALL)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            httpx.post(url + INTENT_PATH, json={"query": "oak"}, headers=dict(_bearer(LATER))).status_code
            == 200
        )

        keys.write_text("too-short\n")
        server.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "API keys refused" in server.log())
        assert "too-short" not in server.log()
        assert _grpc_code(server, _bearer(LATER)) == grpc.StatusCode.OK
    finally:
        keys.write_text(original)
        server.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: _grpc_code(server, _bearer(ALL)) == grpc.StatusCode.OK)


def test_a_bad_key_file_stops_startup(tiny_bundle: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ALL} NoSuchService\n")
    with pytest.raises(RuntimeError, match="unknown services"):
        start_server(tiny_bundle, "--api-keys", str(keys))


def test_keys_with_tls_and_closed_health(tiny_bundle: Path, tmp_path: Path, pki: dict[str, Path]) -> None:  # noqa: F811
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{ALL}\n{INTENT} IntentService\n")
    port = free_port()
    server = start_server(
        tiny_bundle,
        "--api-keys",
        str(keys),
        "--api-keys-all-services",
        "--http-port",
        str(port),
        "--tls-cert",
        str(pki["server"]),
        "--tls-key",
        str(pki["server_key"]),
        tls_ca=pki["ca"],
        health_metadata=_bearer(ALL),
    )
    try:
        with server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as denied:  # a key limited to IntentService: not health
                health.Check(health_pb2.HealthCheckRequest(), metadata=_bearer(INTENT), timeout=5)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _grpc_code(server, _bearer(INTENT)) == grpc.StatusCode.OK
        ca = ssl.create_default_context(cafile=str(pki["ca"]))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ca) as https:
            assert https.get("/health").status_code == 401
            assert https.get("/openapi.json").status_code == 401
            assert https.get("/health", headers=dict(_bearer(ALL))).json() == {"status": "SERVING"}
            assert https.post(INTENT_PATH, json={"query": "oak"}).status_code == 401
            assert (
                https.post(INTENT_PATH, json={"query": "oak"}, headers=dict(_bearer(INTENT))).status_code
                == 200
            )
    finally:
        stop_server(server)


def test_admin_reload_rereads_the_keys(keyed: tuple[LiveServer, str, Path]) -> None:
    server, url, keys = keyed
    original = keys.read_text()
    try:
        keys.write_text(f"{original}{LATER}\n")
        assert _grpc_code(server, _bearer(LATER)) == grpc.StatusCode.UNAUTHENTICATED
        reloaded = httpx.post(url + "/sift.v1.AdminService/ReloadBundle", json={}, timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        assert _grpc_code(server, _bearer(LATER)) == grpc.StatusCode.OK
    finally:
        keys.write_text(original)
        server.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: _grpc_code(server, _bearer(LATER)) == grpc.StatusCode.UNAUTHENTICATED)
