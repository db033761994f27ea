"""sift-bench: closed-loop latency of one Sift call against any address.

This is the foundation's measurement; the load harness (open loop, echo baseline, sweeps) builds on it.
Each run writes JSON with every latency sample's summary plus a Markdown table, both with the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from server._proto.sift.v1 import (
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

QUERIES = (
    "velvet accent chair",
    "oak coffee table",
    "area rug 8x10",
    "brass floor lamp",
    "cast iron skillet",
)


def make_call(channel: grpc.aio.Channel, method: str, candidates: int, product_ids: list[str]) -> Any:
    if method == "intent":
        stub = intent_pb2_grpc.IntentServiceStub(channel)
        return lambda q: stub.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query=q, top_k=5))
    if method == "search":
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        return lambda q: stub.Search(retrieval_pb2.SearchRequest(query=q, k=10))
    if method == "embed":
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        return lambda q: stub.EmbedQuery(retrieval_pb2.EmbedQueryRequest(query=q))
    stub = relevance_pb2_grpc.RelevanceServiceStub(channel)
    cands = [relevance_pb2.Candidate(product_id=pid) for pid in product_ids[:candidates]]
    return lambda q: stub.ScoreRelevance(relevance_pb2.ScoreRelevanceRequest(query=q, candidates=cands))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(args.target) as channel:
        try:
            info = await info_pb2_grpc.InfoServiceStub(channel).GetModelInfo(
                info_pb2.GetModelInfoRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as e:
            reason = f"{e.code().name} {e.details()}"
            raise SystemExit(f"sift-bench: {args.target} is not serving Sift: {reason}") from e
        product_ids = [h.product_id for h in (await _some_products(channel, args.candidates))]
        call = make_call(channel, args.method, args.candidates, product_ids)
        latencies: list[float] = []
        codes: Counter[str] = Counter()
        counter = iter(range(args.warmup + args.requests))

        async def worker() -> None:
            for i in counter:
                start = time.perf_counter()
                try:
                    await call(QUERIES[i % len(QUERIES)])
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                if i >= args.warmup:  # warm-up calls are excluded
                    latencies.append(time.perf_counter() - start)
                    codes[code] += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "command": shlex.join(["sift-bench", *sys.argv[1:]]),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": args.target,
        "bundle_version": info.bundle_version,
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
        "method": args.method,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "candidates": args.candidates if args.method == "relevance" else None,
        "codes": dict(codes),
        # Includes the warm-up calls' time: a conservative (lower) throughput.
        "qps": round((args.warmup + args.requests) / elapsed, 1),
        "latency_ms": {p: round(float(np.percentile(ms, q)), 3) for p, q in PERCENTILES.items()}
        | {"max": round(float(ms.max()), 3)},
    }


PERCENTILES = {"p50": 50, "p90": 90, "p99": 99, "p99.9": 99.9}


async def _some_products(channel: grpc.aio.Channel, n: int) -> list[retrieval_pb2.Hit]:
    reply = await retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
        retrieval_pb2.SearchRequest(query="chair table lamp rug", k=min(max(n, 1), 1000)), timeout=5
    )
    return list(reply.hits)


def markdown(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return "\n".join(
        [
            f"Command: `{result['command']}`  ",
            f"Bundle {result['bundle_version']}, {result['machine']['cores']} cores, {result['time']}",
            "",
            "| method | concurrency | QPS | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | codes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {result['method']} | {result['concurrency']} | {result['qps']} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {lat['p99.9']} | {lat['max']} | {result['codes']} |",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sift-bench", description=__doc__.splitlines()[0])
    target = os.environ.get("SIFT_TARGET", "127.0.0.1:50051")
    parser.add_argument("--target", default=target, help="host:port (env SIFT_TARGET)")
    parser.add_argument("--method", choices=("intent", "search", "embed", "relevance"), default="intent")
    parser.add_argument("--requests", type=int, default=2000, help="measured calls (after warm-up)")
    parser.add_argument("--warmup", type=int, default=200, help="calls sent first and not measured")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight (closed loop)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per relevance call, by id")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"), help="results directory")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args))
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"latency-{args.method}-c{args.concurrency}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
