"""Exit 0 when a Sift server reports SERVING over the gRPC health protocol (for Docker HEALTHCHECK).

Usage: python -m server.healthcheck [--address 127.0.0.1:50051] [--service sift.v1.IntentService]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck")
    parser.add_argument("--address", default=f"127.0.0.1:{os.environ.get('SIFT_PORT', '50051')}")
    parser.add_argument("--service", default="", help="empty = the whole server")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--tls-ca", help="PEM CA of a TLS server (env SIFT_HEALTHCHECK_TLS_CA)")
    parser.add_argument("--tls-cert", help="client certificate PEM, for an mTLS server")
    parser.add_argument("--tls-key", help="client key PEM, for an mTLS server")
    args = parser.parse_args(argv)
    ca = args.tls_ca or os.environ.get("SIFT_HEALTHCHECK_TLS_CA")
    try:
        if ca:
            cert = Path(args.tls_cert).read_bytes() if args.tls_cert else None
            key = Path(args.tls_key).read_bytes() if args.tls_key else None
            creds = grpc.ssl_channel_credentials(Path(ca).read_bytes(), key, cert)
            channel = grpc.secure_channel(args.address, creds)
        else:
            channel = grpc.insecure_channel(args.address)
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as e:
        print(f"{args.address}: {e.code().name} {e.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address} {args.service or '(server)'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
