"""sift-serve: parse settings, build the server, serve until signalled."""

from __future__ import annotations

import asyncio
import logging
import sys

from server.app import run
from server.config import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
    )
    sys.exit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
