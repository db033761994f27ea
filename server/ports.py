"""A free TCP port, for the worker supervisor, the benchmark harness and the tests; standard library only,
so the MLServer peer's own venv can import it too."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (the OS picks it; another process may take it before it is bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
