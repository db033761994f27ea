"""The one error vocabulary of the server: every refusal a caller can cause or be told about is a kind here.

It sits at the bottom of `server/` and knows nothing of gRPC, so every layer may raise it: the service layer
(a bad field, a missing product), the bundle (a capability it lacks) and the runtime (its refusals in
runtime/batcher.py are subclasses of ResourceExhausted and DeadlineExceeded). The transport maps each kind
to a status through one table (transport/status.py).
"""

from __future__ import annotations

from typing import ClassVar


class SiftError(Exception):
    """Base of every error a caller can cause or be told about."""

    names_method: ClassVar[bool] = False
    """Whether the client's message should be prefixed with the method: a runtime refusal says what went
    wrong deep inside (a queue, a deadline) but not for which call."""


class InvalidArgument(SiftError):
    """A request field is malformed or out of range."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(SiftError):
    """A request names something the bundle does not have (a product id, a category)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


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


class Unauthenticated(SiftError):
    """The call carries no API key, or one the server does not know (--api-keys)."""
