"""HTTP/JSON beside gRPC (`--http-port`): the same calls at the same paths, on uvicorn in the server's own
event loop.

`POST /sift.v1.IntentService/ClassifyIntent` with the request as JSON (the protos' JSON mapping: field
names as in the .proto, or their lowerCamelCase JSON names) answers the response as JSON. A route parses its
body into the gRPC request message with json_format and calls the gRPC servicer's own method with an HTTP
stand-in for its context, so the request checks, admission, metrics, request ids, traces and the proto <->
service conversion are the gRPC call's, by construction. Errors are the gRPC status and message, as
`{"code": "INVALID_ARGUMENT", "message": "k: ..."}` with the HTTP status of HTTP_STATUS. Health is
`GET /health?service=...` (200 SERVING, else 503) and `POST /grpc.health.v1.Health/Check`; the OpenAPI
document, built from the same descriptors, is `GET /openapi.json`.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from google.protobuf import json_format, message, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import metrics
from server.admission import PUSHBACK_KEY
from server.api_keys import ApiKeys
from server.errors import SiftError
from server.transport.openapi import HEALTH_CHECK_PATH, openapi_document
from server.transport.register import Undecodable
from server.transport.status import HTTP_STATUS, status_of

log = logging.getLogger("sift.http")

HEALTH_SERVICE = "grpc.health.v1.Health"
# The OpenAPI document is HTTP's reflection: open or guarded as reflection is.
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
TIMEOUT_HEADER = "x-timeout-ms"
"""The client's deadline in milliseconds: the HTTP spelling of gRPC's deadline."""


class Aborted(Exception):
    """What `HttpContext.abort` raises: the call's gRPC status, to answer as HTTP."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str]]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, tuple(trailing)


class HttpContext:
    """The part of grpc.aio.ServicerContext that the servicers and their middleware use, for one HTTP call:
    headers are the metadata, trailing metadata becomes response headers, abort raises Aborted."""

    transport = "http"

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str, deadline: float | None) -> None:
        self._metadata = metadata
        self._peer = peer
        self._deadline = deadline
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def peer(self) -> str:
        return self._peer

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.trailing = tuple(metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        raise Aborted(code, details, trailing_metadata)


@dataclass(frozen=True)
class HttpService:
    """One gRPC service served over HTTP too: its descriptor and the servicer object gRPC calls."""

    descriptor: ServiceDescriptor
    servicer: object


def build_app(
    services: Sequence[HttpService],
    health: Callable[[str], int | None],
    keys: ApiKeys | None,
    max_body_bytes: int,
    version: str,
) -> Starlette:
    """The ASGI app. `health(service)` is the service's grpc.health.v1 status, None for an unknown one."""

    def check_key(request: Request, service: str) -> Response | None:
        if keys is None:
            return None
        try:
            keys.check(request.headers.get("authorization"), service)
        except SiftError as e:
            code = status_of(e)
            metrics.AUTH_REFUSED.labels(code=code.name).inc()
            return error_response(code, str(e))
        return None

    routes = []
    for service in services:
        for method in service.descriptor.methods:
            routes.append(
                Route(
                    f"/{service.descriptor.full_name}/{method.name}",
                    _endpoint(
                        service.descriptor.full_name,
                        message_factory.GetMessageClass(method.input_type),
                        getattr(service.servicer, method.name),
                        check_key,
                        max_body_bytes,
                    ),
                    methods=["POST"],
                )
            )

    async def health_get(request: Request) -> Response:
        if refused := check_key(request, HEALTH_SERVICE):
            return refused
        name = request.query_params.get("service", "")
        status = health(name)
        if status is None:
            return error_response(grpc.StatusCode.NOT_FOUND, f"service: unknown service {name!r}")
        label = _health_name(status)
        return JSONResponse({"status": label}, status_code=200 if label == "SERVING" else 503)

    async def health_check(request: Request) -> Response:
        if refused := check_key(request, HEALTH_SERVICE):
            return refused
        try:
            name = str(json.loads(await request.body() or b"{}").get("service", ""))
        except (ValueError, AttributeError) as e:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid HealthCheckRequest: {e}"
            )
        status = health(name)
        if status is None:
            return error_response(grpc.StatusCode.NOT_FOUND, f"service: unknown service {name!r}")
        return JSONResponse({"status": _health_name(status)})

    document = openapi_document([s.descriptor for s in services], version)
    document_body = json.dumps(document).encode()

    async def openapi(request: Request) -> Response:
        if refused := check_key(request, REFLECTION_SERVICE):
            return refused
        return Response(document_body, media_type="application/json")

    routes += [
        Route("/health", health_get, methods=["GET"]),
        Route(HEALTH_CHECK_PATH, health_check, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _health_name(status: int) -> str:
    from grpc_health.v1 import health_pb2

    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def _endpoint(
    service: str,
    request_class: type[message.Message],
    handler: Callable[[Any, Any], Awaitable[message.Message]],
    check_key: Callable[[Request, str], Response | None],
    max_body_bytes: int,
) -> Callable[[Request], Awaitable[Response]]:
    full_name = request_class.DESCRIPTOR.full_name

    async def endpoint(request: Request) -> Response:
        if refused := check_key(request, service):
            return refused
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return error_response(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"request: larger than the limit of {max_body_bytes} bytes (--max-message-bytes)",
                )
        parsed: message.Message | Undecodable
        try:
            parsed = json_format.Parse(bytes(body) or b"{}", request_class())
        except (json_format.ParseError, UnicodeDecodeError) as e:
            # The servicer's middleware answers it as gRPC answers undecodable bytes: INVALID_ARGUMENT.
            parsed = Undecodable(full_name, str(e))
        try:
            context = HttpContext(_metadata(request), _peer(request), _deadline(request))
        except ValueError as e:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"{TIMEOUT_HEADER}: {e}")
        try:
            response = await handler(parsed, context)
        except Aborted as e:
            return error_response(e.code, e.details, e.trailing)
        body = json_format.MessageToDict(response, preserving_proto_field_name=True)
        return Response(
            json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            media_type="application/json",
            headers=dict(context.trailing),
        )

    return endpoint


def error_response(code: grpc.StatusCode, message: str, trailing: Iterable[tuple[str, str]] = ()) -> Response:
    headers = dict(trailing)
    if (pushback := headers.get(PUSHBACK_KEY)) is not None:
        headers["retry-after"] = str(max(1, math.ceil(int(pushback) / 1000)))
    return JSONResponse(
        {"code": code.name, "message": message}, status_code=HTTP_STATUS[code], headers=headers
    )


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple((key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw)


def _peer(request: Request) -> str:
    """The client as gRPC names a peer (`ipv4:127.0.0.1:5000`), so the admin servicer's localhost rule
    reads HTTP callers the same way."""
    if request.client is None:
        return "unix:"
    host, port = request.client.host, request.client.port
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _deadline(request: Request) -> float | None:
    sent = request.headers.get(TIMEOUT_HEADER)
    if sent is None:
        return None
    ms = float(sent)
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"must be a number of milliseconds >= 0, got {sent[:20]!r}")
    return time.monotonic() + ms / 1000


class HttpServer:
    """uvicorn serving `app` inside the running event loop. Its socket has SO_REUSEPORT, as gRPC's does, so
    the workers of `--workers` share the HTTP port too. Signals stay with the gRPC server's handlers."""

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        tls: tuple[str, str] | None = None,
        client_ca: str | None = None,
        grace_period: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=grace_period,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
            ssl_ca_certs=client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
        )
        self._server: uvicorn.Server | None = None

    async def start(self) -> None:
        sock = _reuseport_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = self.config
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server

    async def stop(self) -> None:
        """Stops listening; calls in flight get the grace period."""
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown()
            self._server = None


def _reuseport_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise OSError(f"cannot bind HTTP to {host}:{port}: {e}") from e
    sock.setblocking(False)
    return sock
