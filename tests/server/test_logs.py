"""Log lines are JSON objects; structured fields ride beside the message without replacing its keys."""

from __future__ import annotations

import json
import logging

from server.logs import FIELDS, JsonFormatter


def _format(**extra: object) -> dict[str, object]:
    record = logging.LogRecord("sift.server", logging.INFO, __file__, 1, "stopped: cut=%d", (0,), None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter().format(record))


def test_structured_fields_are_keys_of_the_line() -> None:
    entry = _format(**{FIELDS: {"drain": {"cut": 0}, "message": "not this"}})
    assert entry["message"] == "stopped: cut=0"  # a field never overwrites a standard key
    assert entry["drain"] == {"cut": 0}


def test_a_line_without_fields_has_the_standard_keys() -> None:
    assert set(_format()) == {"time", "level", "logger", "message"}
