"""TLS and mTLS, with certificates the test makes: a CA, a server certificate for 127.0.0.1, and a
client certificate. Plaintext clients are refused by a TLS server; mTLS refuses clients without a cert."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server._proto.sift.v1 import intent_pb2, intent_pb2_grpc
from tests.conftest import LiveServer, free_port, start_server, stop_server


def _issue(name: str, issuer: tuple | None, *, ca: bool = False, ip: str | None = None) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    cert = builder.sign(issuer[0] if issuer else key, hashes.SHA256())
    return key, cert


def _write(directory: Path, name: str, key, cert) -> tuple[Path, Path]:
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = _issue("sift test CA", None, ca=True)
    _, ca_pem = _write(d, "ca", *ca)
    server_key, server_pem = _write(d, "server", *_issue("sift", ca, ip="127.0.0.1"))
    client_key, client_pem = _write(d, "client", *_issue("search-backend", ca))
    return {
        "ca": ca_pem,
        "server_key": server_key,
        "server": server_pem,
        "client_key": client_key,
        "client": client_pem,
    }


def _classify(server: LiveServer, credentials: grpc.ChannelCredentials | None) -> str:
    channel = (
        grpc.secure_channel(server.address, credentials)
        if credentials
        else grpc.insecure_channel(server.address)
    )
    with channel:
        stub = intent_pb2_grpc.IntentServiceStub(channel)
        return stub.ClassifyIntent(
            intent_pb2.ClassifyIntentRequest(query="oak table"), timeout=5
        ).model_version


def _tls_server(tiny_bundle: Path, pki: dict[str, Path], *extra: str) -> LiveServer:
    args = ("--tls-cert", str(pki["server"]), "--tls-key", str(pki["server_key"]), *extra)
    return start_server(tiny_bundle, *args, tls_ca=pki["ca"], tls_client=(pki["client_key"], pki["client"]))


def test_tls(tiny_bundle: Path, pki: dict[str, Path]) -> None:
    server = _tls_server(tiny_bundle, pki)
    try:
        assert _classify(server, grpc.ssl_channel_credentials(pki["ca"].read_bytes()))
        with pytest.raises(grpc.RpcError) as plain:
            _classify(server, None)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_server(server)


def test_mtls_requires_a_client_certificate(tiny_bundle: Path, pki: dict[str, Path]) -> None:
    server = _tls_server(tiny_bundle, pki, "--tls-client-ca", str(pki["ca"]))
    ca = pki["ca"].read_bytes()
    try:
        with_cert = grpc.ssl_channel_credentials(
            ca, pki["client_key"].read_bytes(), pki["client"].read_bytes()
        )
        assert _classify(server, with_cert)
        with pytest.raises(grpc.RpcError) as anonymous:
            _classify(server, grpc.ssl_channel_credentials(ca))
        assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_server(server)


def test_half_a_tls_configuration_is_refused_at_start(tiny_bundle: Path, pki: dict[str, Path]) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "server", "--bundle", str(tiny_bundle), "--port", str(free_port()),
         "--metrics-port", "0", "--tls-cert", str(pki["server"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "tls_cert and tls_key go together" in proc.stderr
