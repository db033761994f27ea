"""sift-serve: parse settings, build the server, serve until signalled."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from server.app import run
from server.config import Settings
from server.logs import JsonFormatter


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    cores = usable_cores()
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


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's CPU
    limit, which os.cpu_count() does not see: it reports the node's cores)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def run_with_loop(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Runs `main` on the chosen event loop implementation."""
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


if __name__ == "__main__":
    main()
