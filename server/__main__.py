"""sift-serve: parse settings, build the server, serve until signalled."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from server.app import run
from server.config import Settings
from server.logs import JsonFormatter


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    cores = os.cpu_count() or 1
    if settings.workers == 0:
        settings.workers = max(cores // settings.intra_op_threads, 1)
    if settings.workers * settings.intra_op_threads > cores:
        logging.getLogger("sift.server").warning(
            "workers (%d) x intra_op_threads (%d) > %d cores: model runs will wait for cores",
            settings.workers,
            settings.intra_op_threads,
            cores,
        )
    if settings.workers > 1:
        from server.workers import supervise

        sys.exit(supervise(settings))
    sys.exit(run_with_loop(run(settings), settings.event_loop))


def run_with_loop(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Runs `main` on the chosen event loop implementation."""
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


if __name__ == "__main__":
    main()
