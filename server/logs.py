"""Structured logs: one JSON object per line, carrying the request id of the call being served.

The request id comes from the client's `x-request-id` metadata when it sends one (so a search stack can
follow one query through its services), otherwise the server makes one; either way it is returned in
the trailing metadata.

A line may carry machine-readable fields beside its message: `log.info(..., extra={FIELDS: {"drain": {...}}})`
adds a `drain` key to the JSON object, so that a reader needs no regex over the prose.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("sift_request_id", default="")
FIELDS = "sift_fields"  # the LogRecord attribute holding a line's structured fields
_SAFE = re.compile(r"[^A-Za-z0-9._:/-]")


# Server-made ids: a random prefix per process and a counter, unique without a uuid per call.
_PREFIX = uuid.uuid4().hex[:8]
_COUNTER = itertools.count(1)


def request_id_from(metadata: object) -> str:
    """The client's x-request-id (sanitized, at most 64 characters), or a new one."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "x-request-id" and isinstance(value, str) and (sent := _SAFE.sub("", value)[:64]):
            return sent
    return f"{_PREFIX}-{next(_COUNTER):x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so log shippers need no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := REQUEST_ID.get():
            entry["request_id"] = request_id
        for key, value in getattr(record, FIELDS, {}).items():
            entry.setdefault(key, value)  # never over the standard keys
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
