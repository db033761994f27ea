"""Hot reload without downtime: through the admin RPC, on SIGHUP and by watching the bundle directory.
Under load, a good bundle swaps in with zero failed calls and no client ever goes back to the old version;
a corrupt one is refused, the old one keeps serving, and the failure shows in the metrics."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from server._proto.sift.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
)
from server.manifest import Manifest
from tests.conftest import LiveServer, start_server, stop_server
from tests.server.test_bundle import edit_manifest


def _copy(tiny_bundle: Path, tmp_path: Path, name: str, version: str | None = None) -> Path:
    out = Path(shutil.copytree(tiny_bundle, tmp_path / name))
    if version:
        edit_manifest(out, lambda m: m.update(bundle_version=version))
    return out


def _version(server: LiveServer) -> str:
    with server.channel() as channel:
        stub = info_pb2_grpc.InfoServiceStub(channel)
        return stub.GetModelInfo(info_pb2.GetModelInfoRequest(), timeout=5).bundle_version


class Load:
    """Client threads calling ClassifyIntent and ScoreRelevance until stopped; every outcome is kept."""

    def __init__(self, server: LiveServer, threads: int = 3) -> None:
        self.outcomes: list[list[tuple[str, str]]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server, out)) for out in self.outcomes]

    def _run(self, server: LiveServer, out: list[tuple[str, str]]) -> None:
        with server.channel() as channel:
            intent = intent_pb2_grpc.IntentServiceStub(channel)
            relevance = relevance_pb2_grpc.RelevanceServiceStub(channel)
            request = relevance_pb2.ScoreRelevanceRequest(
                query="oak table",
                candidates=[relevance_pb2.Candidate(title=f"oak table {i}") for i in range(20)],
            )
            while not self._stop.is_set():
                try:
                    a = intent.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query="oak table"), timeout=10)
                    b = relevance.ScoreRelevance(request, timeout=10)
                    out += [("OK", a.model_version), ("OK", b.model_version)]
                except grpc.RpcError as e:
                    out.append((e.code().name, e.details()))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        while sum(len(o) for o in self.outcomes) < 30:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # calls after the reload
        self._stop.set()
        for t in self._threads:
            t.join()


def _reload(server: LiveServer, path: str = "", token: str = "") -> admin_pb2.ReloadBundleResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with server.channel() as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return stub.ReloadBundle(admin_pb2.ReloadBundleRequest(path=path), timeout=60, metadata=metadata)


def test_reload_under_load_good_then_corrupt(tiny_bundle: Path, tmp_path: Path) -> None:
    old = _copy(tiny_bundle, tmp_path, "old")
    new = _copy(tiny_bundle, tmp_path, "new", version="tiny-reloaded")
    corrupt = _copy(tiny_bundle, tmp_path, "corrupt", version="tiny-corrupt")
    with (corrupt / "intent.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 16)
    server = start_server(old)
    before = _version(server)
    try:
        with Load(server) as load:
            reply = _reload(server, str(new))
        assert reply.bundle_version == "tiny-reloaded" and reply.previous_version == before
        for out in load.outcomes:
            assert all(code == "OK" for code, _ in out), [o for o in out if o[0] != "OK"][:3]
            versions = [v for _, v in out]
            switch = versions.index("tiny-reloaded")
            assert set(versions[:switch]) == {before} and set(versions[switch:]) == {"tiny-reloaded"}
        print(f"good reload under load: {sum(map(len, load.outcomes))} calls, 0 failed")  # pytest -s

        with Load(server) as load, pytest.raises(grpc.RpcError) as refused:
            _reload(server, str(corrupt))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "intent.onnx: sha256 mismatch" in refused.value.details()
        assert all(out == [("OK", "tiny-reloaded")] * len(out) for out in load.outcomes)
        print(f"corrupt reload under load: {sum(map(len, load.outcomes))} calls, 0 failed")
        assert _version(server) == "tiny-reloaded"
        text = server.metrics()
        assert "sift_bundle_load_failures_total 1.0" in text
        schema = Manifest.read(new).schema_version
        assert f'sift_bundle_info{{schema_version="{schema}",version="tiny-reloaded"}} 1.0' in text
        assert before not in text
    finally:
        assert stop_server(server) == 0
    assert "bundle refused: intent.onnx: sha256 mismatch" in server.log()


def test_sighup_and_directory_watch_reload_the_configured_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    live = _copy(tiny_bundle, tmp_path, "live")
    server = start_server(live, "--watch-interval", "0.1")
    try:
        before = _version(server)
        edit_manifest(live, lambda m: m.update(bundle_version="tiny-watched"))
        deadline = time.monotonic() + 20
        while _version(server) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _version(server) == "tiny-watched"
        edit_manifest(live, lambda m: m.update(bundle_version="tiny-hup"))
        server.process.send_signal(signal.SIGHUP)  # the watch may get there first; either reloads
        while _version(server) != "tiny-hup" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _version(server) == "tiny-hup"
    finally:
        assert stop_server(server) == 0


def test_admin_token_is_required_when_set(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, "--admin-token", "s3cret")
    try:
        for token in ("", "wrong"):
            with pytest.raises(grpc.RpcError) as denied:
                _reload(server, token=token)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _reload(server, token="s3cret").bundle_version == _version(server)
    finally:
        stop_server(server)
