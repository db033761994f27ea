"""Admin operations: reloading the bundle. Who may call is the transport's business (localhost or token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.bundle import BundleError
from server.errors import FailedPrecondition, InvalidArgument

# (path or None for the configured bundle) -> (new bundle, previous bundle or None, seconds)
Loader = Callable[[Path | None], Awaitable[tuple[Any, Any, float]]]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    bundle_version: str
    previous_version: str
    load_seconds: float


class AdminService:
    def __init__(self, load: Loader) -> None:
        self._load = load

    async def reload(self, path: str) -> ReloadResult:
        if "\x00" in path or len(path) > 4096:
            raise InvalidArgument("path", "must be a file system path of at most 4096 characters")
        try:
            new, previous, seconds = await self._load(Path(path) if path else None)
        except BundleError as e:
            raise FailedPrecondition(f"bundle refused, the previous one keeps serving: {e}") from e
        return ReloadResult(new.version, previous.version if previous else "", round(seconds, 3))
