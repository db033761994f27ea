"""Compatibility: the error kinds live in server/errors.py, at the bottom of the server, for every layer."""

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

__all__ = [
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SiftError",
    "Unavailable",
]
