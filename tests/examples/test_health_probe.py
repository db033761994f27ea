"""The Kubernetes gRPC probe's view: grpc.health.v1.Health/Check with a service name, sent by grpcurl (an
independent client) to a real sift-serve."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from server.app import SERVICE_NAMES
from tests.conftest import LiveServer, start_server
from tests.server.test_grpcurl import grpcurl


def check(address: str, service: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            grpcurl(),
            "-plaintext",
            "-max-time",
            "5",
            "-d",
            json.dumps({"service": service}),
            address,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def status(address: str, service: str) -> str:
    done = check(address, service)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["status"]


@pytest.mark.parametrize("service", ["", *SERVICE_NAMES])
def test_serving_per_service(live_server: LiveServer, service: str) -> None:
    assert status(live_server.address, service) == "SERVING"


def test_unknown_service_is_not_found(live_server: LiveServer) -> None:
    done = check(live_server.address, "sift.v1.NoSuchService")
    assert done.returncode != 0 and "NotFound" in done.stderr


def test_not_serving_during_drain(tiny_bundle: Path) -> None:
    """SIGTERM: during --drain-period the probe sees NOT_SERVING (so Kubernetes and load balancers take the
    pod out) while the port still answers; then the server exits 0."""
    server = start_server(tiny_bundle, "--drain-period", "2")
    try:
        assert status(server.address, SERVICE_NAMES[0]) == "SERVING"
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        seen = {name: status(server.address, name) for name in ("", SERVICE_NAMES[0])}
        while set(seen.values()) != {"NOT_SERVING"} and time.monotonic() < deadline:
            seen = {name: status(server.address, name) for name in ("", SERVICE_NAMES[0])}
        assert seen == {"": "NOT_SERVING", SERVICE_NAMES[0]: "NOT_SERVING"}
        assert server.process.wait(timeout=30) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.mark.skipif(shutil.which("grpc_health_probe") is None, reason="grpc_health_probe is not on PATH")
def test_grpc_health_probe(live_server: LiveServer) -> None:
    """The probe binary of pre-1.24 Kubernetes (a Go module, github.com/grpc-ecosystem/grpc-health-probe; it
    ships on neither PyPI nor npm), when it is installed."""
    for service in ("", *SERVICE_NAMES):
        done = subprocess.run(
            ["grpc_health_probe", f"-addr={live_server.address}", f"-service={service}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0 and "SERVING" in done.stdout + done.stderr
    unknown = subprocess.run(
        ["grpc_health_probe", f"-addr={live_server.address}", "-service=sift.v1.Nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unknown.returncode != 0
