"""Workloads: queries from a file or the synthetic catalogue, turned into serialized Sift requests.

A workload is a weighted mix of calls (`intent`, `search`, `embed`, `relevance`), so one name or
`intent=0.6,search=0.3,relevance=0.1`. Queries are drawn uniformly or Zipf-skewed (search traffic is:
a few head queries make most of it).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from benchmarks.loadgen import Payload
from server._proto.sift.v1 import (
    intent_pb2,
    relevance_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

METHOD_PATHS = {
    "intent": "/sift.v1.IntentService/ClassifyIntent",
    "search": "/sift.v1.RetrievalService/Search",
    "embed": "/sift.v1.RetrievalService/EmbedQuery",
    "relevance": "/sift.v1.RelevanceService/ScoreRelevance",
}


def parse_mix(spec: str) -> dict[str, float]:
    """'intent' or 'intent=0.6,search=0.4' -> normalized weights."""
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in METHOD_PATHS:
            raise ValueError(
                f"unknown call {name!r} in workload {spec!r}; choose from {sorted(METHOD_PATHS)}"
            )
        weights[name] = float(weight) if weight else 1.0
        if weights[name] < 0:
            raise ValueError(f"negative weight for {name} in workload {spec!r}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"workload {spec!r} has no positive weight")
    return {name: w / total for name, w in weights.items()}


def read_queries(path: Path) -> list[str]:
    """One query per line; CSV/TSV with a `query` column (else the first); or JSONL with a `query` field."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        queries = [json.loads(line)["query"] for line in text.splitlines() if line.strip()]
    elif suffix in (".csv", ".tsv"):
        rows = list(csv.reader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        column = rows[0].index("query") if rows and "query" in rows[0] else 0
        start = 1 if rows and "query" in rows[0] else 0
        queries = [row[column] for row in rows[start:] if len(row) > column]
    else:
        queries = text.splitlines()
    queries = [q.strip() for q in queries if q.strip()]
    if not queries:
        raise ValueError(f"{path}: no queries found")
    return queries


def synthetic_queries(n: int, products: int = 6000, seed: int = 0) -> tuple[list[str], list[str]]:
    """(queries, titles) from the embedded synthetic catalogue the default bundle is trained on: queries are
    random word spans of its titles, as in catalogue pre-training."""
    from training.data.synthetic import generate_catalogue  # pure Python; no torch

    catalogue = generate_catalogue(products, seed)
    titles = [p.title for p in catalogue.products]
    rng = random.Random(seed + 1)
    queries = []
    for _ in range(n):
        words = rng.choice(titles).lower().split()
        length = min(len(words), rng.choice((1, 2, 2, 3, 3, 4)))
        start = rng.randrange(len(words) - length + 1)
        queries.append(" ".join(words[start : start + length]))
    return queries, titles


def draw(queries: Sequence[str], n: int, distribution: str, seed: int, zipf_s: float = 1.1) -> list[str]:
    """n queries: uniform over the list, or Zipf with exponent s over its distinct entries."""
    rng = random.Random(seed)
    if distribution == "uniform":
        return [rng.choice(queries) for _ in range(n)]
    distinct = list(dict.fromkeys(queries))
    weights = [1 / (rank + 1) ** zipf_s for rank in range(len(distinct))]
    return rng.choices(distinct, weights=weights, k=n)


@dataclass(frozen=True)
class CallShape:
    """Per-call parameters shared by every request of a workload."""

    top_k: int = 5
    k: int = 10
    candidates: int = 100
    candidates_by: str = "id"  # "id" reads the product side from the bundle; "text" sends titles
    search_mode: str = ""  # "", dense, lexical or hybrid; "" = the bundle's default


async def product_ids(channel: grpc.aio.Channel, n: int) -> list[str]:
    """Real product ids from the server, for relevance by id: the hits of a broad search."""
    reply = await retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
        retrieval_pb2.SearchRequest(query="chair table lamp rug sofa bed", k=n), timeout=10
    )
    ids = [hit.product_id for hit in reply.hits]
    if len(ids) < n:
        raise SystemExit(f"sift-bench: the server returned {len(ids)} products; relevance needs {n}")
    return ids


def build_payloads(
    mix: dict[str, float],
    queries: Sequence[str],
    shape: CallShape,
    seed: int,
    ids: Sequence[str] = (),
    titles: Sequence[str] = (),
) -> list[Payload]:
    """One serialized request per query, its call drawn from the mix, independently of the query (its own
    random stream: sharing draw()'s would give one call the head of a Zipf mix and the others its tail)."""
    rng = random.Random(f"calls/{seed}")
    names = list(mix)
    calls = rng.choices(names, weights=[mix[n] for n in names], k=len(queries))
    if shape.candidates_by == "id":
        candidates = [relevance_pb2.Candidate(product_id=pid) for pid in ids[: shape.candidates]]
    else:
        candidates = [relevance_pb2.Candidate(title=t) for t in titles[: shape.candidates]]
    payloads = []
    for query, call in zip(queries, calls, strict=True):
        if call == "intent":
            message = intent_pb2.ClassifyIntentRequest(query=query, top_k=shape.top_k)
        elif call == "search":
            mode = retrieval_pb2.SearchMode.Value(
                f"SEARCH_MODE_{(shape.search_mode or 'unspecified').upper()}"
            )
            message = retrieval_pb2.SearchRequest(query=query, k=shape.k, mode=mode)
        elif call == "embed":
            message = retrieval_pb2.EmbedQueryRequest(query=query)
        else:
            message = relevance_pb2.ScoreRelevanceRequest(query=query, candidates=candidates)
        payloads.append((METHOD_PATHS[call], message.SerializeToString()))
    return payloads
