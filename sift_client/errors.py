"""The one exception the client raises for a failed call."""

from __future__ import annotations

import grpc

PUSHBACK_KEY = "grpc-retry-pushback-ms"


class SiftError(Exception):
    """A call failed: `code` is its gRPC status code, `message` the server's message (for a bad field it
    starts with the field, e.g. `items[3].query: must not be empty`), `request_id` the call's x-request-id
    (to find it in the server's logs), `pushback_ms` the server's retry hint when it was busy. By then the
    channel's retry policy has already retried what it may."""

    def __init__(
        self, code: grpc.StatusCode, message: str, request_id: str, pushback_ms: int | None = None
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.pushback_ms = pushback_ms

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, request_id: str) -> SiftError:
        """From grpc's exception (sync or asyncio); the server's echoed x-request-id wins over ours."""
        trailing = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        pushback = trailing.get(PUSHBACK_KEY)
        return cls(
            error.code(),  # type: ignore[attr-defined]
            error.details() or "",  # type: ignore[attr-defined]
            str(trailing.get("x-request-id", request_id)),
            int(pushback) if pushback is not None and str(pushback).lstrip("-").isdigit() else None,
        )
