"""`sift-bench http` and `sift-bench tracing`: what HTTP/JSON and tracing cost, as p50 at one call in flight.

Both compare two ways of making the same calls in one run, interleaved: each round sends the same `--calls`
requests one after another through each way (the order alternating between rounds), so the shared
machine's drift falls on both alike; each way's p50 is taken per round, and the ratio of the two p50s per
round is reported as the median (min-max) over rounds.

- http: one sift-serve with --http-port; gRPC (a bytes-in, bytes-out stub) against HTTP/JSON (keep-alive
  http.client, the request's proto JSON) on the same server, same queries.
- tracing: two sift-serve processes, without and with --otlp-endpoint (exporting every call's spans to a
  separate receiver process, benchmarks/otlp_receiver.py); gRPC calls to each.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory

from benchmarks import report
from benchmarks.load import model_info
from benchmarks.servers import Process, free_port, start_sift
from benchmarks.workload import CallShape, build_payloads, draw, synthetic_queries

RESULTS = Path("benchmarks/results")
CALLS = {"intent": "ClassifyIntent", "search": "Search", "relevance": "ScoreRelevance"}

Call = Callable[[str, bytes], None]


def add_parsers(sub: Any) -> None:
    helps = {
        "http": "HTTP/JSON's p50 against gRPC's: same server, same calls, one run",
        "tracing": "p50 with --otlp-endpoint against without: two servers, same calls, one run",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--bundle", type=Path, default=Path("bundles/default"))
        p.add_argument("--serve-arg", action="append", default=[], help="a sift-serve flag (both servers)")
        p.add_argument("--calls", default="intent,search,relevance", help="of intent, search, relevance")
        p.add_argument("--candidates", type=int, default=10, help="titles per ScoreRelevance")
        p.add_argument("--rounds", type=int, default=15)
        p.add_argument("--per-round", type=int, default=300, help="calls per round, each way")
        p.add_argument("--warmup", type=int, default=300, help="calls each way before the rounds")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--output", type=Path, default=RESULTS / name)


def grpc_caller(address: str) -> tuple[Call, Callable[[], None]]:
    channel = grpc.insecure_channel(address)
    stubs: dict[str, Any] = {}

    def call(path: str, body: bytes) -> None:
        stub = stubs.get(path) or stubs.setdefault(path, channel.unary_unary(path))
        stub(body, timeout=10)

    return call, channel.close


def http_caller(port: int) -> tuple[Call, Callable[[], None]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}

    def call(path: str, body: bytes) -> None:
        connection.request("POST", path, body, headers)
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status} from {path}: {data[:200]!r}")

    return call, connection.close


def as_json(path: str, body: bytes) -> bytes:
    """A serialized request as the HTTP/JSON body of the same call."""
    service, method = path.strip("/").split("/")
    descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{method}").input_type
    message = message_factory.GetMessageClass(descriptor).FromString(body)
    return json_format.MessageToJson(message, indent=None).encode()


def paired_rounds(
    ways: dict[str, tuple[Call, Callable[[bytes], bytes]]],
    payloads: list[tuple[str, bytes]],
    rounds: int,
    per_round: int,
    warmup: int,
) -> dict[str, Any]:
    """Each way sends the same `per_round` requests per round, sequentially; ways alternate order by round.
    `ways` maps a name to (call, body for that way from the gRPC bytes)."""
    bodies = {
        name: [(path, convert(path, body)) for path, body in payloads] for name, (_, convert) in ways.items()
    }
    names = list(ways)
    for name in names:
        call = ways[name][0]
        for i in range(warmup):
            call(*bodies[name][i % len(payloads)])
    p50s: dict[str, list[float]] = {name: [] for name in names}
    p99s: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        start = r * per_round
        for name in names if r % 2 == 0 else reversed(names):
            call, items = ways[name][0], bodies[name]
            times = []
            for i in range(start, start + per_round):
                path, body = items[i % len(items)]
                began = time.perf_counter()
                call(path, body)
                times.append((time.perf_counter() - began) * 1000)
            times.sort()
            p50s[name].append(statistics.median(times))
            p99s[name].append(times[min(len(times) - 1, round(0.99 * (len(times) - 1)))])
    base, other = names
    ratios = [b / a for a, b in zip(p50s[base], p50s[other], strict=True)]
    return {
        "p50_ms": {name: _spread(values) for name, values in p50s.items()},
        "p99_ms": {name: _spread(values) for name, values in p99s.items()},
        "p50_ratio": _spread(ratios),
        "rounds_p50_ms": p50s,
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _payloads(args: argparse.Namespace, call: str) -> list[tuple[str, bytes]]:
    pool, titles = synthetic_queries(2000, seed=args.seed)
    queries = draw(pool, args.per_round * args.rounds, "uniform", args.seed)
    shape = CallShape(candidates=args.candidates, candidates_by="text")
    return build_payloads({call: 1.0}, queries, shape, args.seed, titles=titles)


def cmd(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"sift-bench-{args.command}-"))
    processes: list[Process] = []
    closers: list[Callable[[], None]] = []
    calls = [c.strip() for c in args.calls.split(",") if c.strip()]
    try:
        if args.command == "http":
            port = free_port()
            sift, address, _ = start_sift(args.bundle, [*args.serve_arg, "--http-port", str(port)], workdir)
            processes.append(sift)
            grpc_call, close = grpc_caller(address)
            http_call, close_http = http_caller(port)
            closers += [close, close_http]
            ways = {"grpc": (grpc_call, lambda _, body: body), "http": (http_call, as_json)}
        else:
            receiver_port = free_port()
            receiver = Process(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.otlp_receiver",
                    "--port",
                    str(receiver_port),
                    "--count-only",
                ],
                workdir / "receiver.log",
            )
            processes.append(receiver)
            off, off_address, _ = start_sift(args.bundle, args.serve_arg, workdir, "off")
            processes.append(off)
            traced = [*args.serve_arg, "--otlp-endpoint", f"127.0.0.1:{receiver_port}"]
            on, on_address, _ = start_sift(args.bundle, traced, workdir, "on")
            processes.append(on)
            off_call, close_off = grpc_caller(off_address)
            on_call, close_on = grpc_caller(on_address)
            closers += [close_off, close_on]
            address = off_address
            ways = {"off": (off_call, lambda _, body: body), "on": (on_call, lambda _, body: body)}
        info = model_info(address)
        results = {}
        for call in calls:
            print(f"{args.command}: {CALLS[call]}", file=sys.stderr)
            results[CALLS[call]] = paired_rounds(
                ways, _payloads(args, call), args.rounds, args.per_round, args.warmup
            )
        received = None
        if args.command == "tracing":
            on.stop()  # flushes its last spans
            time.sleep(1)
            receiver.stop()
            received = receiver.log.read_text().strip().splitlines()[-1]
    finally:
        for close in closers:
            close()
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    environment = report.environment()
    for package in ("starlette", "uvicorn", "httptools", "opentelemetry-sdk"):
        environment["packages"][package] = metadata.version(package)
    return {
        "environment": environment,
        "bundle_version": info.bundle_version,
        "serve_args": args.serve_arg,
        "ways": list(ways),
        "spec": {
            "rounds": args.rounds,
            "per_round": args.per_round,
            "warmup": args.warmup,
            "candidates": args.candidates,
            "queries": "synthetic catalogue queries, uniform",
        },
        "receiver": received,
        "results": results,
    }


WHAT = {
    "http": (
        "HTTP/JSON against gRPC on one sift-serve (`--http-port`), the same calls at one in flight from one "
        "Python client: gRPC through a bytes-in, bytes-out stub, HTTP through keep-alive `http.client` with "
        "the request's proto JSON.",
        "gRPC",
        "HTTP/JSON",
        "HTTP / gRPC",
    ),
    "tracing": (
        "Two sift-serve processes, one with `--otlp-endpoint` exporting every call's spans (the call, "
        "featurize, model, index, rules) to an OTLP/gRPC receiver in a third process, the same gRPC calls "
        "at one in flight to each.",
        "tracing off",
        "tracing on",
        "on / off",
    ),
}


def markdown(result: dict[str, Any], command: str) -> str:
    what, first, second, ratio = WHAT[command]
    spec = result["spec"]
    lines = report.header(result, f"sift-bench {command}")
    lines += [
        what,
        "",
        f"{spec['rounds']} rounds of {spec['per_round']} calls each way ({spec['queries']}; ScoreRelevance "
        f"with {spec['candidates']} titles), after {spec['warmup']} warm-up calls each way; the ways "
        "alternate order by round. p50 and p99: median (min-max) over rounds of each round's figure; the "
        "ratio: median (min-max) of the per-round ratio of p50s.",
        "",
        f"| call | {first} p50 | {second} p50 | {ratio} p50 | {first} p99 | {second} p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    a, b = result["ways"]
    for call, row in result["results"].items():
        p50, p99, r = row["p50_ms"], row["p99_ms"], row["p50_ratio"]
        spread = f"**{r['median']:.2f}x** ({r['min']:.2f}-{r['max']:.2f})"
        lines.append(f"| {call} | {_ms(p50[a])} | {_ms(p50[b])} | {spread} | {_ms(p99[a])} | {_ms(p99[b])} |")
    if result.get("receiver"):
        lines += ["", f"The receiver: {result['receiver']}."]
    return "\n".join(lines) + "\n"


def _ms(stat: dict[str, float]) -> str:
    return f"{stat['median']:.3f} ms ({stat['min']:.3f}-{stat['max']:.3f})"


def run(args: argparse.Namespace) -> None:
    result = cmd(args)
    text = markdown(result, args.command)
    report.write_results(args.output, result, text)
    print(text, file=sys.stderr)
