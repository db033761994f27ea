"""The one table from the server's error kinds (server/errors.py) to gRPC status codes."""

from __future__ import annotations

import grpc

from server.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SiftError,
    Unavailable,
)

STATUS: dict[type[SiftError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def status_of(error: SiftError) -> grpc.StatusCode:
    """The status of the nearest kind `error` is (a runtime refusal maps as the kind it subclasses)."""
    for kind in type(error).__mro__:
        if (code := STATUS.get(kind)) is not None:
            return code
    return grpc.StatusCode.INTERNAL
