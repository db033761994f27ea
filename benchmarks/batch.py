"""`sift-bench batch`: what a query costs in a batch call against the same queries sent as single calls.

For each call (ClassifyIntent, Search in the bundle's default mode and in dense mode, EmbedQuery) and each
batch size n: a round sends n queries as n single calls one after another, and the same n queries as one
batch call, in alternating order (single first in even rounds), over one channel with one call in flight.
A query's cost is the round's wall time over n, client included: what a search stack waits for per query.
Every round draws fresh queries from the pool, so no cache could help (and sift-serve's is off by default).
Rounds repeat in blocks; each block gives a median per query for each side and their ratio, and the report
gives the median over blocks with (min-max): the machine is shared, and ratios taken within one block are
what compares.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from server._proto.sift.v1 import intent_pb2, retrieval_pb2

_MODES = {"": 0, "dense": 1, "lexical": 2, "hybrid": 3}


@dataclass(frozen=True)
class BatchCall:
    """One call measured both ways: its single and batch method paths, and their request bytes."""

    name: str
    single_path: str
    batch_path: str
    single: Callable[[str], bytes]
    batch: Callable[[list[str]], bytes]


def calls(k: int, modes: list[str]) -> list[BatchCall]:
    def search(mode: str) -> tuple[Callable[[str], bytes], Callable[[list[str]], bytes]]:
        def one(q: str) -> retrieval_pb2.SearchRequest:
            return retrieval_pb2.SearchRequest(query=q, k=k, mode=_MODES[mode])  # type: ignore[arg-type]

        return (
            lambda q: one(q).SerializeToString(),
            lambda qs: retrieval_pb2.SearchBatchRequest(items=[one(q) for q in qs]).SerializeToString(),
        )

    intent = "/sift.v1.IntentService/"
    retrieval = "/sift.v1.RetrievalService/"
    out = [
        BatchCall(
            "ClassifyIntent",
            intent + "ClassifyIntent",
            intent + "ClassifyIntentBatch",
            lambda q: intent_pb2.ClassifyIntentRequest(query=q).SerializeToString(),
            lambda qs: intent_pb2.ClassifyIntentBatchRequest(
                items=[intent_pb2.ClassifyIntentRequest(query=q) for q in qs]
            ).SerializeToString(),
        )
    ]
    for mode in modes:
        single, batch = search(mode)
        label = f"Search ({mode or 'bundle default'} mode, k {k})"
        out.append(BatchCall(label, retrieval + "Search", retrieval + "SearchBatch", single, batch))
    out.append(
        BatchCall(
            "EmbedQuery",
            retrieval + "EmbedQuery",
            retrieval + "EmbedQueryBatch",
            lambda q: retrieval_pb2.EmbedQueryRequest(query=q).SerializeToString(),
            lambda qs: retrieval_pb2.EmbedQueryBatchRequest(
                items=[retrieval_pb2.EmbedQueryRequest(query=q) for q in qs]
            ).SerializeToString(),
        )
    )
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _round(
    single: Callable[..., bytes],
    batch: Callable[..., bytes],
    requests: list[bytes],
    batch_request: bytes,
    single_first: bool,
    timeout_s: float,
) -> tuple[float, float]:
    """Seconds for the single calls in a row, and for the batch call."""
    seconds = {}
    for side in ("single", "batch") if single_first else ("batch", "single"):
        start = time.perf_counter()
        if side == "single":
            for request in requests:
                single(request, timeout=timeout_s)
        else:
            batch(batch_request, timeout=timeout_s)
        seconds[side] = time.perf_counter() - start
    return seconds["single"], seconds["batch"]


def measure(
    address: str,
    queries: list[str],
    sizes: list[int],
    repeats: int,
    rounds: int,
    warmup_rounds: int,
    k: int,
    search_modes: list[str],
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Per call and batch size: each block's median microseconds per query, single and batch, and the
    ratio batch / single; then their medians (min-max) over the blocks."""
    table = calls(k, search_modes)
    cursor = 0

    def take(n: int) -> list[str]:
        nonlocal cursor
        chunk = [queries[(cursor + i) % len(queries)] for i in range(n)]
        cursor += n
        return chunk

    blocks: dict[tuple[str, int], list[dict[str, float]]] = {}
    with grpc.insecure_channel(address) as channel:
        stubs = {}
        for call in table:
            for path in (call.single_path, call.batch_path):
                stubs[path] = channel.unary_unary(path, lambda b: b, lambda b: b)
        for _ in range(repeats):
            for call in table:
                single, batch = stubs[call.single_path], stubs[call.batch_path]
                for n in sizes:
                    singles, batches = [], []
                    for r in range(warmup_rounds + rounds):
                        chunk = take(n)
                        requests = [call.single(q) for q in chunk]
                        s, b = _round(single, batch, requests, call.batch(chunk), r % 2 == 0, timeout_s)
                        if r >= warmup_rounds:
                            singles.append(s / n * 1e6)
                            batches.append(b / n * 1e6)
                    single_us, batch_us = statistics.median(singles), statistics.median(batches)
                    blocks.setdefault((call.name, n), []).append(
                        {"single_us": single_us, "batch_us": batch_us, "ratio": batch_us / single_us}
                    )
    rows = []
    for (name, n), runs in blocks.items():
        rows.append(
            {
                "call": name,
                "batch_size": n,
                "single_us_per_query": _stats([b["single_us"] for b in runs]),
                "batch_us_per_query": _stats([b["batch_us"] for b in runs]),
                "batch_over_single": _stats([b["ratio"] for b in runs]),
                "blocks": runs,
            }
        )
    return rows


def batch_markdown(result: dict[str, Any], head: list[str]) -> str:
    spec = result["spec"]
    lines = [
        *head,
        f"Queries: {result['queries']}. Each call and batch size: {spec['repeats']} blocks of "
        f"{spec['rounds']} rounds (after {spec['warmup_rounds']} warm-up rounds); a round sends n queries "
        "as n single calls in a row and as one batch call, in alternating order, one call in flight, "
        "over one channel from one client process (its time is included: what the caller waits for). "
        "Microseconds per query: median over the blocks of each block's median, with (min-max). "
        "The ratio is batch / single within each block, then the median: below 1 the batch is cheaper.",
        "",
        "| call | batch size | single calls, us per query | one batch call, us per query | batch / single |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(stat: dict[str, float], digits: int) -> str:
        return f"{stat['median']:,.{digits}f} ({stat['min']:,.{digits}f}-{stat['max']:,.{digits}f})"

    for row in result["rows"]:
        lines.append(
            f"| {row['call']} | {row['batch_size']} | {cell(row['single_us_per_query'], 0)} "
            f"| {cell(row['batch_us_per_query'], 0)} | {cell(row['batch_over_single'], 2)}x |"
        )
    return "\n".join([*lines, ""])
