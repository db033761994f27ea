"""The one long-lived channel a process keeps to Sift: retries in its service config, keepalive, TLS.

Retries are gRPC's own, declared in the service config: UNAVAILABLE (a replica stopping or unreachable) and
RESOURCE_EXHAUSTED (Sift's admission, busy: its trailing `grpc-retry-pushback-ms` makes gRPC wait exactly
that long before the next attempt instead of its backoff, and a negative value stops retrying). Never
CANCELLED (gRPC core's code beyond --max-pending-requests, indistinguishable from a client's own
cancellation) nor DEADLINE_EXCEEDED (the deadline covers every attempt: no time is left). `retryThrottling`
stops retrying while most calls fail, so an overloaded cluster gets no retry storm. Every Sift call but
ReloadBundle is a read, so a retry never does anything twice; ReloadBundle is not retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

# The services whose calls are retried (AdminService is not: a reload is not a read).
RETRIED_SERVICES = (
    "sift.v1.IntentService",
    "sift.v1.RelevanceService",
    "sift.v1.RetrievalService",
    "sift.v1.InfoService",
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC retries with exponential backoff; `max_attempts` counts the first (gRPC caps it at 5; 1 turns
    retries off). Throttling: each failed attempt costs a token of `throttle_tokens`, each success gives back
    `throttle_ratio`; below half the tokens, retries stop until successes refill them."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 0.5
    backoff_multiplier: float = 2.0
    throttle_tokens: int = 10
    throttle_ratio: float = 0.1


DEFAULT_RETRY = RetryPolicy()
# What wait_until_serving checks: the server as a whole ("") and each service a search backend calls.
HEALTH_SERVICES = ("", "sift.v1.IntentService", "sift.v1.RelevanceService", "sift.v1.RetrievalService")


@dataclass(frozen=True, slots=True)
class TLS:
    """PEM files: `ca` for a server started with --tls-cert/--tls-key; `cert` and `key` too for one that
    requires client certificates (--tls-client-ca, mTLS)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS cert and key go together")
        key = self.key.read_bytes() if self.key else None
        cert = self.cert.read_bytes() if self.cert else None
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key, cert)


def service_config(retry: RetryPolicy) -> dict[str, Any]:
    config: dict[str, Any] = {
        # With an address resolving to several replicas (dns:///sift-headless:50051), spread calls over all
        # of them; a retry can then land on a replica that is not stopping.
        "loadBalancingConfig": [{"round_robin": {}}],
    }
    if retry.max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": [{"service": name} for name in RETRIED_SERVICES],
                # No "timeout" here: every call sets its own deadline.
                "retryPolicy": {
                    "maxAttempts": retry.max_attempts,
                    "initialBackoff": f"{retry.initial_backoff_s}s",
                    "maxBackoff": f"{retry.max_backoff_s}s",
                    "backoffMultiplier": retry.backoff_multiplier,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
        config["retryThrottling"] = {"maxTokens": retry.throttle_tokens, "tokenRatio": retry.throttle_ratio}
    return config


def channel_options(
    retry: RetryPolicy,
    keepalive_time_ms: int = 60_000,
    keepalive_timeout_ms: int = 10_000,
    max_message_bytes: int = 4 * 1024 * 1024,
) -> list[tuple[str, Any]]:
    """The service config, keepalive and the message cap (sift-serve's --max-message-bytes default)."""
    return [
        ("grpc.service_config", json.dumps(service_config(retry))),
        ("grpc.enable_retries", int(retry.max_attempts > 1)),
        # A ping every keepalive_time_ms while calls are in flight finds a dead connection (a vanished peer
        # sends no FIN); no answer in keepalive_timeout_ms fails its calls with UNAVAILABLE, which is
        # retried. No pings on an idle connection: sift-serve allows one per 30 s and answers more with
        # GOAWAY too_many_pings.
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def open_channel(address: str, options: list[tuple[str, Any]], tls: TLS | None = None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.credentials(), options=options)


def open_aio_channel(
    address: str, options: list[tuple[str, Any]], tls: TLS | None = None
) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.credentials(), options=options)
