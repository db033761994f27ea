"""Errors the service layer raises. It knows nothing of gRPC: transport/errors.py maps them to statuses."""

from __future__ import annotations


class SiftError(Exception):
    """Base of every error a caller can cause or be told about."""


class InvalidArgument(SiftError):
    """A request field is malformed or out of range."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(SiftError):
    """A request names something the bundle does not have (a product id, a category)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unavailable(SiftError):
    """No bundle is loaded yet."""


class FailedPrecondition(SiftError):
    """The loaded bundle cannot answer this call (it was trained without the component the call needs)."""


class DeadlineExceeded(SiftError):
    """The client's deadline passed, or would pass, before the answer."""


class ResourceExhausted(SiftError):
    """The server is at its concurrency or queue bound; the client should back off or go elsewhere."""


class PermissionDenied(SiftError):
    """The caller may not make this call (admin calls from elsewhere than localhost, or a wrong token)."""
