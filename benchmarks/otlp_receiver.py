"""A minimal OTLP/gRPC trace receiver built from the collector protos (`opentelemetry-proto`): it keeps
every span it is sent and prints each trace as a tree. The tracing tests and `sift-bench tracing` export to
it; run alone, it shows what `sift-serve --otlp-endpoint` sends:

    python -m benchmarks.otlp_receiver --port 4317        # prints each trace as its call span arrives
    sift-serve --bundle bundles/default --otlp-endpoint localhost:4317
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SERVER_KIND = trace_pb2.Span.SPAN_KIND_SERVER


@dataclass
class Received:
    """What the receiver holds: every span, in arrival order, with its resource's service.name."""

    spans: list[tuple[str, trace_pb2.Span]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def trace(self, trace_id: str) -> list[trace_pb2.Span]:
        with self.lock:
            return [span for _, span in self.spans if span.trace_id.hex() == trace_id]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(predicate, timeout)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received, on_export: Callable[[], None] | None) -> None:
        self._received = received
        self._on_export = on_export

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._received.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    self._received.spans.extend((service, span) for span in scope_spans.spans)
            self._received.lock.notify_all()
        if self._on_export is not None:
            self._on_export()
        return trace_service_pb2.ExportTraceServiceResponse()


def start_receiver(
    port: int = 0, on_export: Callable[[], None] | None = None
) -> tuple[grpc.Server, int, Received]:
    """A receiver on 127.0.0.1:`port` (0: a free one); returns (server, port, what it received)."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received, on_export), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound, received


def _value(value: common_pb2.AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def attributes(span: trace_pb2.Span) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


def tree(spans: list[trace_pb2.Span]) -> str:
    """One trace as an indented tree, children in start order, with each span's duration and attributes.
    A parent that is not among `spans` (the client's own span, from its traceparent) is named at the top."""
    ids = {span.span_id for span in spans}
    children: dict[bytes, list[trace_pb2.Span]] = {}
    for span in sorted(spans, key=lambda s: s.start_time_unix_nano):
        children.setdefault(span.parent_span_id, []).append(span)
    lines = [f"trace {spans[0].trace_id.hex()}"]

    def show(span: trace_pb2.Span, prefix: str, last: bool) -> None:
        ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        attrs = " ".join(f"{k}={v}" for k, v in attributes(span).items())
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{span.name}  {ms:.3f} ms  {attrs}".rstrip())
        kids = children.get(span.span_id, [])
        for i, kid in enumerate(kids):
            show(kid, prefix + ("   " if last else "│  "), i == len(kids) - 1)

    roots = [s for s in spans if s.parent_span_id not in ids]
    for parent in dict.fromkeys(s.parent_span_id for s in roots):
        lines.append(f"└─ (client span {parent.hex() or 'none'})")
        kids = [s for s in roots if s.parent_span_id == parent]
        for i, span in enumerate(kids):
            show(span, "   ", i == len(kids) - 1)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_receiver", description=__doc__)
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--traces", type=int, default=0, help="exit after printing this many (0: never)")
    parser.add_argument("--count-only", action="store_true", help="print no trees, only the count at exit")
    args = parser.parse_args(argv)
    printed: set[str] = set()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def print_new() -> None:
        if args.count_only:
            return
        for _, span in list(received.spans):
            trace_id = span.trace_id.hex()
            if span.kind == SERVER_KIND and trace_id not in printed:
                printed.add(trace_id)
                print(tree(received.trace(trace_id)), flush=True)
                if args.traces and len(printed) >= args.traces:
                    done.set()

    server, port, received = start_receiver(args.port, lambda: print_new())
    print(f"OTLP/gRPC receiver on 127.0.0.1:{port}", flush=True)
    try:
        while not done.is_set():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    server.stop(0)
    with received.lock:
        traces = {span.trace_id for _, span in received.spans}
        print(f"received {len(received.spans)} spans of {len(traces)} traces", flush=True)


if __name__ == "__main__":
    main()
