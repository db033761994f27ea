"""Shared fixtures: one tiny bundle trained per test session, and a live sift-serve process on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.servers import free_port, wait_heavy_workers  # free_port: tests import it from here

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset trained end to end from the real MiniLM teacher, once per session, its stage cache
    kept (tiny_stages). Set SIFT_TEST_BUNDLE to a tiny bundle already trained to skip that while iterating
    locally."""
    from training.pipeline import fp32_sibling, stage_directory, train_bundle
    from training.presets import PRESETS

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    if given := os.environ.get("SIFT_TEST_BUNDLE"):
        # What training keeps beside a bundle: its fp32 exports, and its stage cache when kept.
        for beside in (fp32_sibling, stage_directory):
            if beside(Path(given)).is_dir():
                shutil.copytree(beside(Path(given)), beside(out))
        return Path(shutil.copytree(given, out))
    train_bundle(PRESETS["tiny"], out, None, seed=0, keep_stages=True)
    return out


@pytest.fixture(scope="session")
def tiny_stages(tiny_bundle: Path) -> Path:
    """The tiny bundle's training stage cache (its teachers), kept by `keep_stages`."""
    from training.pipeline import stage_directory

    stages = stage_directory(tiny_bundle)
    if not (stages / "relevance.pt").is_file():
        pytest.skip(f"SIFT_TEST_BUNDLE has no kept stage cache beside it ({stages})")
    return stages


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may corrupt."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@dataclass
class LiveServer:
    address: str
    metrics_port: int
    process: subprocess.Popen[str]
    log_path: Path
    credentials: grpc.ChannelCredentials | None = None  # for a TLS server

    def metrics(self) -> str:
        """The server's Prometheus exposition text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def log(self) -> str:
        """Everything the server wrote so far (it goes to a file: a pipe nobody drains would fill up and
        block the server on its next log line)."""
        return self.log_path.read_text()

    def channel(self) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.address, self.credentials)
        return grpc.insecure_channel(self.address)


def start_server(
    bundle: Path,
    *extra: str,
    tls_ca: Path | None = None,
    tls_client: tuple[Path, Path] | None = None,
    health_metadata: tuple[tuple[str, str], ...] = (),
) -> LiveServer:
    """sift-serve on free ports, once SERVING. With `tls_ca` the test's own channels use TLS (and the
    client key and certificate `tls_client` for mTLS); `health_metadata` goes with the health checks that
    wait for it (an API key, when keys guard health)."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fd, name = tempfile.mkstemp(prefix="sift-serve-", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--bundle",
                str(bundle),
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    credentials = None
    if tls_ca is not None:
        key, cert = (tls_client[0].read_bytes(), tls_client[1].read_bytes()) if tls_client else (None, None)
        credentials = grpc.ssl_channel_credentials(tls_ca.read_bytes(), key, cert)
    server = LiveServer(f"127.0.0.1:{port}", metrics_port, process, log_path, credentials)
    wait_serving(server, metadata=health_metadata)
    if "--metrics-port" not in extra:  # its heavy workers load after SERVING: tests start from them ready
        wait_heavy_workers(f"http://127.0.0.1:{metrics_port}/metrics", list(extra), process)
    return server


def assert_help_names_env(module: str, fields: object) -> None:
    """`python -m <module> --help` names every settings field as a flag and as its SIFT_* variable."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for name in fields:  # type: ignore[attr-defined]
        assert f"--{name.replace('_', '-')}" in flat
        assert f"[env: SIFT_{name.upper()}]" in flat, name


def wait_serving(
    server: LiveServer, timeout: float = 30.0, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    deadline = time.monotonic() + timeout
    with server.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1, metadata=metadata)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError("server did not report SERVING in time")


def stop_server(server: LiveServer) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=30)


@pytest.fixture(scope="session")
def live_server(tiny_bundle: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_bundle)
    yield server
    if server.process.poll() is None:
        stop_server(server)
