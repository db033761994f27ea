"""The per-call middleware every servicer method runs in: `rpc(name)`.

It reads the request id, refuses a call whose deadline has already passed or whose request could not be
decoded, admits the call by its estimated cost when the servicer has an admission controller
(server/admission.py: a refusal is RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms`), times the call
(duration by status code, in-flight gauge, the time breakdown in trailing metadata, a trace span when
tracing is on: server/tracing.py), and turns errors into
statuses: a kind of server/errors.py becomes its status (transport/status.py) with the message naming the
field; anything unexpected is logged and becomes INTERNAL without leaking internals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import FieldDescriptor

from server import metrics, timing, tracing
from server.admission import PUSHBACK_KEY, Overloaded, Ticket, Work
from server.errors import DeadlineExceeded, InvalidArgument, SiftError
from server.logs import REQUEST_ID, request_id_from
from server.transport.register import Undecodable
from server.transport.status import status_of

log = logging.getLogger("sift.transport")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as a time.monotonic() instant, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def rpc(method: str, work: Callable[[Any], Work] | None = None) -> Callable[[Handler], Handler]:
    """Wraps a servicer method: admission by `work` (the call's estimated work, from its request) when the
    servicer's `admission` is set, error mapping, request duration by status code, in-flight gauge, and the
    call's time breakdown in trailing metadata when the servicer's `timing_metadata` is set."""

    def wrap(handler: Handler) -> Handler:
        in_flight = metrics.REQUESTS_IN_FLIGHT.labels(method=method)
        durations: dict[grpc.StatusCode, Any] = {}  # labelled children, looked up once per status code

        async def traced(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            attributes = {
                "rpc.system": getattr(context, "transport", "grpc"),
                "rpc.service": _service_of(request, method),
                "rpc.method": method,
                **_request_attributes(request),
            }
            name = f"{attributes['rpc.service']}/{method}"
            with tracing.call(name, context.invocation_metadata(), attributes):
                response = await serve(self, request, context)
                tracing.annotate(model_version=getattr(response, "model_version", ""))
                return response

        @functools.wraps(handler)
        async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            if tracing.enabled():
                return await traced(self, request, context)
            return await serve(self, request, context)

        async def serve(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            in_flight.inc()
            breakdown = timing.open_breakdown()
            request_id = request_id_from(context.invocation_metadata())
            REQUEST_ID.set(request_id)
            ticket: Ticket | None = None
            admission = getattr(self, "admission", None)
            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:  # never start work nobody waits for
                    raise DeadlineExceeded("the deadline passed before the call started")
                if isinstance(request, Undecodable):
                    raise InvalidArgument("request", f"not a valid {request.message_type}: {request.error}")
                if work is not None and admission is not None:
                    ticket = admission.admit(work(request))
                response = await handler(self, request, context)
                trailing: tuple[tuple[str, str], ...] = (("x-request-id", request_id),)
                if self.timing_metadata:
                    trailing += timing.as_metadata(breakdown, time.perf_counter() - start)
                context.set_trailing_metadata(trailing)
                return response
            except SiftError as e:
                code = status_of(e)
                trailing = (("x-request-id", request_id),)
                # The message names the field and the problem, never the request's content. Admission's
                # refusals are counted (sift_admission_refused_total), not logged: under a retry storm
                # a log line each would cost more than the refusal.
                if isinstance(e, Overloaded):
                    trailing += ((PUSHBACK_KEY, str(e.pushback_ms)),)
                else:
                    level = logging.INFO if code == grpc.StatusCode.UNAVAILABLE else logging.WARNING
                    log.log(level, "%s refused with %s: %s", method, code.name, e)
                details = f"{method}: {e}" if e.names_method else str(e)
                await context.abort(code, details, trailing_metadata=trailing)
            except asyncio.CancelledError:  # the client went away, or its deadline cut the call
                remaining = context.time_remaining()
                late = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error in %s", method)
                await context.abort(code, f"internal error in {method}; see the server log")
            finally:
                tracing.annotate(status_code=code.name)
                if ticket is not None:
                    admission.done(ticket, learn=code == grpc.StatusCode.OK)
                in_flight.dec()
                if code not in durations:
                    durations[code] = metrics.REQUEST_DURATION.labels(method=method, code=code.name)
                durations[code].observe(time.perf_counter() - start)

        return call

    return wrap


def _service_of(request: Any, method: str) -> str:
    """The full name of the service whose `method` takes `request` (its proto file declares both)."""
    file = getattr(getattr(request, "DESCRIPTOR", None), "file", None)
    for service in file.services_by_name.values() if file else ():
        if method in service.methods_by_name:
            return service.full_name
    return ""


_NUMBERS = (
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_UINT64,
    FieldDescriptor.CPPTYPE_FLOAT,
    FieldDescriptor.CPPTYPE_DOUBLE,
    FieldDescriptor.CPPTYPE_BOOL,
)


def _request_attributes(request: Any) -> dict[str, Any]:
    """A span's view of the request: its numbers and enums (k, top_k, mode) and the length of its lists
    (candidates, items); never its texts, which are the users' queries."""
    attributes: dict[str, Any] = {}
    for field, value in request.ListFields() if hasattr(request, "ListFields") else ():
        key = f"sift.request.{field.name}"
        if field.is_repeated:
            attributes[key + ".count"] = len(value)
        elif field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
            known = field.enum_type.values_by_number.get(value)
            attributes[key] = known.name if known else value
        elif field.cpp_type in _NUMBERS:
            attributes[key] = value
    return attributes
