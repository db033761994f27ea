"""API keys for ordinary calls (`--api-keys FILE`), checked the same way for gRPC and HTTP.

The file holds one key per line, optionally followed by the comma-separated services it may call (all of
them when none are given); blank lines and lines starting with `#` are skipped:

    k3y-for-the-search-stack-0123456789
    k3y-for-the-catalogue-team-abcdefgh  IntentService,sift.v1.RetrievalService

Clients send `authorization: Bearer <key>`. A call without a known key is UNAUTHENTICATED, one whose key
may not call its service is PERMISSION_DENIED; messages never quote the key. Keys are compared in constant
time against every key on file, so the time taken says nothing about which key nearly matched. The file is
re-read with the bundle (SIGHUP, ReloadBundle, the directory watch); a bad file is refused and the keys in
force stay.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from server.errors import PermissionDenied, Unauthenticated

MIN_KEY_CHARS = 16
"""Shorter keys are refused when the file is read: a key is a secret, not a name."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    secret: bytes
    services: frozenset[str] | None  # full service names; None: every guarded service


class ApiKeys:
    """The keys in force and the services they guard. `services` are the full names a key file may name
    (a file may also give the part after the package, `IntentService`); `open_services` need no key."""

    def __init__(self, path: Path, services: Iterable[str], open_services: Iterable[str] = ()) -> None:
        self.path = path
        names = list(services)
        self._known = {name.rsplit(".", 1)[-1]: name for name in names} | {name: name for name in names}
        self._open = frozenset(open_services)
        self._keys: tuple[ApiKey, ...] = ()

    def __len__(self) -> int:
        return len(self._keys)

    def reload(self) -> int:
        """Reads the file; returns how many keys it holds. Raises ValueError naming the line that is wrong
        (never quoting a key), and then the keys in force stay."""
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the API key file {self.path}: {e}") from e
        keys: list[ApiKey] = []
        seen: set[bytes] = set()
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{self.path} line {number}"
            if len(fields) > 2:
                raise ValueError(f"{where}: expected a key and at most one comma-separated list of services")
            secret = fields[0].encode()
            if len(fields[0]) < MIN_KEY_CHARS:
                raise ValueError(f"{where}: the key is shorter than {MIN_KEY_CHARS} characters")
            if secret in seen:
                raise ValueError(f"{where}: the key is listed twice")
            seen.add(secret)
            services = None
            if len(fields) == 2:
                names = [name for name in fields[1].split(",") if name]
                unknown = [name for name in names if name not in self._known]
                if unknown or not names:
                    raise ValueError(
                        f"{where}: unknown services {unknown}; known: {sorted(set(self._known.values()))}"
                    )
                services = frozenset(self._known[name] for name in names)
            keys.append(ApiKey(secret, services))
        self._keys = tuple(keys)
        return len(keys)

    def check(self, authorization: str | None, service: str) -> None:
        """Raises Unauthenticated or PermissionDenied unless `authorization` ("Bearer <key>") holds a key
        that may call `service` (a full service name); open services pass without one."""
        if service in self._open:
            return
        scheme, _, sent = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not sent.strip():
            raise Unauthenticated(f"{service} needs an API key: send `authorization: Bearer <key>`")
        presented = sent.strip().encode()
        match = None
        for key in self._keys:  # every key, no early exit: constant time in which key matches
            if hmac.compare_digest(key.secret, presented):
                match = key
        if match is None:
            raise Unauthenticated("the API key is not known to this server")
        if match.services is not None and service not in match.services:
            raise PermissionDenied(f"this API key may not call {service}")
