"""Holds the bundle being served. Each call reads `store.bundle` once and uses that object throughout,
so swapping in a new bundle is a single reference assignment and no call ever mixes two bundles."""

from __future__ import annotations

from server.bundle import Bundle
from server.errors import Unavailable


class BundleStore:
    def __init__(self, bundle: Bundle | None = None) -> None:
        self._bundle = bundle

    @property
    def bundle(self) -> Bundle:
        bundle = self._bundle
        if bundle is None:
            raise Unavailable("no bundle is loaded yet")
        return bundle

    @property
    def loaded(self) -> bool:
        return self._bundle is not None

    def swap(self, bundle: Bundle) -> Bundle | None:
        old, self._bundle = self._bundle, bundle
        return old
