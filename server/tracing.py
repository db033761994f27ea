"""OpenTelemetry traces of calls, exported over OTLP/gRPC when `--otlp-endpoint` is set.

Each call is a span whose parent is the client's W3C `traceparent` (gRPC metadata or an HTTP header);
featurization, model runs, index searches and rule passes are its children. The SDK is imported only by
`configure`: with no endpoint every function here returns at its first line (a shared no-op context
manager), so a server without tracing pays one global lookup per hook and imports nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

_NOOP = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer once configured
_provider: Any = None
_propagator: Any = None
_SpanKind: Any = None
_current_span: Any = None  # opentelemetry.trace.get_current_span


def configure(endpoint: str, service_name: str = "sift", sample_ratio: float = 1.0) -> None:
    """Exports spans to the OTLP/gRPC collector at `endpoint` (host:port, or http(s)://host:port) in
    batches from a background thread, so a call never waits for the collector (when it is down, spans are
    dropped once the queue is full). A call with a traceparent is traced when its client sampled it; one
    without, with probability `sample_ratio`; an unsampled call makes no child spans."""
    global _tracer, _provider, _propagator, _SpanKind, _current_span
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind, get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=not endpoint.startswith("https://"))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _propagator, _SpanKind = provider, TraceContextTextMapPropagator(), SpanKind
    _current_span = get_current_span
    _tracer = provider.get_tracer("sift.server")


def shutdown() -> None:
    """Flushes the spans not yet exported (at server stop); tracing is off afterwards."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


def call(
    name: str, metadata: Iterable[tuple[str, Any]] | None, attributes: dict[str, Any]
) -> contextlib.AbstractContextManager[Any]:
    """The span of one call, child of the client's `traceparent` in `metadata` when it sent one."""
    if _tracer is None:
        return _NOOP
    carrier = {key: value for key, value in metadata or () if key in ("traceparent", "tracestate")}
    parent = _propagator.extract(carrier) if carrier else None
    return _tracer.start_as_current_span(name, context=parent, kind=_SpanKind.SERVER, attributes=attributes)


def _in_call() -> bool:
    """Whether a call's span is current: steps outside calls (warm-up, admission's calibration) report
    nothing."""
    return _current_span().is_recording()


def step(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current call around one step (model, index, rules)."""
    if _tracer is None or not _in_call():
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=_named(attributes))


def record(name: str, seconds: float, **attributes: Any) -> None:
    """A child span of the current call for a step that just ended and took `seconds` (featurization is
    timed by its callers already: server/timing.py hands its time here)."""
    if _tracer is None or not _in_call():
        return
    end = time.time_ns()
    span = _tracer.start_span(name, start_time=end - int(seconds * 1e9), attributes=_named(attributes))
    span.end(end_time=end)


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (the call's, outside any step): a cache hit, the bundle version."""
    if _tracer is None:
        return
    _current_span().set_attributes(_named(attributes))


def _named(attributes: dict[str, Any]) -> dict[str, Any]:
    """Sift's own attributes are namespaced: `k` is `sift.k` on the span."""
    return {f"sift.{key}": value for key, value in attributes.items()}
