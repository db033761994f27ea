"""`sift-bench scale --graph-check N`: is the 1M grown catalogue's low recall@10 the index, or the catalogue?

The grown catalogue copies each real product about 167 times at a million (its vectors plus noise). Such a
catalogue is clusters of near-copies, which an HNSW graph may not link to each other. This builds, at N
products, training's index (usearch HNSW, f16, expansion_add 128) over two catalogues of the same size and
noise: `copies`, 167 noisy copies of each of 1/167 of the real products, as dense as the 1M grown one; and
`mixes`, each product a random mix of two real products plus the same noise (spread as real neighbours
are, with no clusters). For each and each connectivity it gives recall@10 against exact search (and within
0.005 of the exact 10th score: near-ties), at expansion_search 64 and 256, the spread of the exact top 10,
and how many searches for 2,000 hits got fewer (the graph reached no more from that query).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

NOISE = 0.02  # as benchmarks/scale_catalogue.py
COPIES = 167  # copies per real product in the 1M grown catalogue
QUERIES = 100
TIE = 0.005


def catalogue(real: np.ndarray, n: int, kind: str, seed: int = 0) -> np.ndarray:
    """[n, views, dim] float16 unit vectors grown from `real` [m, views, dim]."""
    rng = np.random.default_rng(seed)
    if kind == "copies":
        v = real[rng.integers(0, max(1, n // COPIES), n)]
    elif kind == "mixes":
        a, b, w = rng.integers(0, len(real), n), rng.integers(0, len(real), n), rng.random(n)
        w = w.astype(np.float32)[:, None, None]
        v = w * real[a] + (1 - w) * real[b]
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
    else:
        raise ValueError(f"catalogue kind {kind!r}: not one of copies, mixes")
    v = v + rng.standard_normal(v.shape).astype(np.float32) * NOISE
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float16)


def recall(vectors: np.ndarray, queries: np.ndarray, connectivity: int) -> dict[str, Any]:
    from usearch.index import Index

    n, views, dim = vectors.shape
    start = time.perf_counter()
    index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=connectivity, expansion_add=128)
    index.add(np.arange(n * views, dtype=np.uint64), vectors.reshape(-1, dim).astype(np.float32))
    out: dict[str, Any] = {"connectivity": connectivity, "build_s": round(time.perf_counter() - start, 1)}
    exact = np.empty((len(queries), n), dtype=np.float32)
    for s in range(0, n, 65536):
        part = vectors[s : s + 65536].astype(np.float32)
        exact[:, s : s + len(part)] = (
            (part.reshape(-1, dim) @ queries.T).reshape(len(part), views, -1).max(1).T
        )
    top = np.sort(-np.partition(-exact, 10, axis=1)[:, :11], axis=1)[:, ::-1]
    tenth = top[:, 9]
    out["exact_top10_spread"] = round(float(np.median(top[:, 0] - tenth)), 4)
    for ef in (64, 256):
        index.expansion_search = ef
        strict, ties, short = [], [], 0
        for i, q in enumerate(queries):
            keys = index.search(q, 10 * views).keys.astype(np.int64) // views
            _, first = np.unique(keys, return_index=True)
            got = exact[i, keys[np.sort(first)][:10]]
            strict.append(np.sum(got >= tenth[i] - 1e-6) / 10)
            ties.append(np.sum(got >= tenth[i] - TIE) / 10)
            short += len(index.search(q, 2000).keys) < 2000
        out[f"ef{ef}"] = {
            "recall_at_10": round(float(np.mean(strict)), 3),
            f"recall_at_10_within_{TIE}": round(float(np.mean(ties)), 3),
            "searches_short": short,
        }
    return out


def graph_check(base: Path, n: int, connectivities: list[int], kinds: tuple[str, ...]) -> dict[str, Any]:
    from server.bundle import load_bundle

    bundle = load_bundle(base)
    assert bundle.index is not None and bundle.products is not None
    m = len(bundle.products)
    real = bundle.index.all_views(np.arange(m))
    model, feed = bundle.query_model()
    name = model.signature()[0][0].name
    rng = np.random.default_rng(2)
    texts = []
    for row in rng.integers(0, m, QUERIES).tolist():  # two to four words of a real title, as sift-bench scale
        words = bundle.products.titles[row].replace(",", " ").split()
        size = int(rng.integers(2, 5))
        at = int(rng.integers(0, max(1, len(words) - size + 1)))
        texts.append(" ".join(words[at : at + size]))
    queries = np.concatenate([model.run({name: feed([t])}) for t in texts]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    runs = []
    for kind in kinds:
        vectors = catalogue(real, n, kind)
        for c in connectivities:
            runs.append({"catalogue": kind, **recall(vectors, queries, c)})
    return {"products": n, "real_products": m, "queries": QUERIES, "runs": runs}


def graph_markdown(result: dict[str, Any], head: list[str]) -> str:
    lines = [
        *head,
        f"{result['products']:,} products grown from {result['real_products']:,} real ones (noise {NOISE} "
        f"per dimension): `copies` is {COPIES} noisy copies of each of {result['products'] // COPIES:,} "
        "products (the density of the 1M grown catalogue), `mixes` a random mix of two real products each. "
        f"{result['queries']} queries (title words through the bundle's query model); recall@10 against "
        f"exact search, and counting a hit within {TIE} of the exact 10th score; short: searches for 2,000 "
        "hits that got fewer.",
        "",
        "| catalogue | connectivity | build s | exact top-10 spread | ef 64: recall@10 / within "
        f"{TIE} / short | ef 256: recall@10 / within {TIE} / short |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        within = f"recall_at_10_within_{TIE}"
        cells = [
            f"{r[e]['recall_at_10']:.3f} / {r[e][within]:.3f} / {r[e]['searches_short']}"
            for e in ("ef64", "ef256")
        ]
        lines.append(
            f"| {r['catalogue']} | {r['connectivity']} | {r['build_s']:.0f} | {r['exact_top10_spread']:.4f} "
            f"| {cells[0]} | {cells[1]} |"
        )
    return "\n".join([*lines, ""])
