"""GetModelInfo: what is being served, and the evaluation figures training recorded."""

from __future__ import annotations

from server.bundle import Bundle
from server.service.store import BundleStore


class InfoService:
    def __init__(self, store: BundleStore) -> None:
        self._store = store

    def info(self) -> Bundle:
        """The bundle itself: every field the response needs is on it, already validated."""
        return self._store.bundle
