"""The floor: a bare grpc.aio server that answers Sift's method paths with canned response bytes.

It does no work beyond gRPC itself (no deserialisation, no model), with the same message size caps as
Sift, so Sift's latency divided by this server's, measured in the same run, is Sift's own cost.
Run it as `python -m benchmarks.echo --responses FILE`; it prints `port N` once it listens.

`--stall-at S --stall-ms M` blocks the event loop for M ms once, on the first call S seconds after the
first call: the coordinated omission check, a server pause that only an open-loop load generator sees in full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

# Sift's own default cap (server/config.py max_message_bytes), so both servers frame messages alike.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class EchoHandler(grpc.GenericRpcHandler):
    """Answers every known method path with that path's canned response, as raw bytes."""

    def __init__(self, responses: dict[str, bytes], stall_at: float = 0.0, stall_ms: float = 0.0) -> None:
        self._handlers = {
            path: grpc.unary_unary_rpc_method_handler(self._answerer(reply))
            for path, reply in responses.items()
        }
        self._first_call: float | None = None
        self._stall_at = stall_at
        self._stall_s = stall_ms / 1000

    def _answerer(self, reply: bytes):
        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if self._stall_s:
                now = time.monotonic()
                self._first_call = self._first_call or now
                if now - self._first_call >= self._stall_at:
                    self._stall_s, stall = 0.0, self._stall_s
                    time.sleep(stall)  # blocks the whole loop, like a GC pause or a stuck worker
            return reply

        return answer

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def read_responses(path: Path) -> dict[str, bytes]:
    """The canned replies: a JSON object of method path -> hex-encoded serialized response."""
    return {method: bytes.fromhex(reply) for method, reply in json.loads(path.read_text()).items()}


def write_responses(path: Path, responses: dict[str, bytes]) -> None:
    path.write_text(json.dumps({method: reply.hex() for method, reply in responses.items()}))


async def serve(
    responses: dict[str, bytes], host: str, port: int, stall_at: float = 0.0, stall_ms: float = 0.0
) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    server.add_generic_rpc_handlers((EchoHandler(responses, stall_at, stall_ms),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"port {bound}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=Path, required=True, help="JSON: method path -> hex reply")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument(
        "--stall-at", type=float, default=0.0, help="stall once, this long after the first call"
    )
    parser.add_argument("--stall-ms", type=float, default=0.0, help="length of that stall (0: never stall)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(read_responses(args.responses), args.host, args.port, args.stall_at, args.stall_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
