"""What the real-data parts share (real_queries, wands, flipkart): reading the staged sets, mapping their
class names onto a bundle's labels, the metric helpers (weighted k-NN vote, precision@k by category, means
with bootstrap intervals) and the served services, called in-process exactly as gRPC calls them.

These parts evaluate shipped bundles and train nothing: every student figure is what the served code
(server/service/*.py over server/bundle.py) answers.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.bundle import Bundle, load_bundle
from server.manifest import category_id
from server.runtime.onnx import ThreadSettings
from server.service.intent import IntentService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits
from training.data.loaders import category_path
from training.metrics import bootstrap_ci
from training.teachers import TEACHERS

UNKNOWN = -1
"""Gold label of a query whose class is empty: it asks for no class of the taxonomy."""
UNMAPPED = -2
"""Gold label of a class the bundle does not have: no model can answer it, so it counts as an error."""
WARM_UP_CALLS = 20


def normalize(text: str) -> str:
    """Lower-cased, whitespace squeezed: the key that makes repeated texts count once."""
    return " ".join(text.lower().split())


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a staged CSV (or WANDS's TSV, which quotes nothing) as dicts."""
    tsv = path.suffix == ".tsv"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else 0)
        return list(reader)


def distinct(texts: Sequence[str]) -> list[str]:
    """The texts in first-seen order, one per normalized form, empty ones dropped."""
    seen: dict[str, str] = {}
    for text in texts:
        key = normalize(text)
        if key and key not in seen:
            seen[key] = text.strip()
    return list(seen.values())


def label_mapper(paths: Sequence[str]) -> Callable[[str], int]:
    """Maps a data set's class name to the index of a bundle label: by exact path, then by label id (the
    manifest's category_id, as the raw name and as the catalogue loader's path, which reads ">>" and "/" as
    level separators), then by a unique leaf name (as the taxonomy loader does). Empty -> UNKNOWN, no match
    -> UNMAPPED."""
    by_path = {p: i for i, p in enumerate(paths)}
    by_id = {category_id(p): i for i, p in enumerate(paths)}
    by_leaf: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_leaf.setdefault(p.split(">")[-1].strip().lower(), []).append(i)

    def index(raw: str) -> int:
        name = raw.strip()
        if not name:
            return UNKNOWN
        for key, table in (
            (name, by_path),
            (category_id(name), by_id),
            (category_id(category_path(name)), by_id),
        ):
            if key in table:
                return table[key]
        leaf = by_leaf.get(name.lower(), [])
        return leaf[0] if len(leaf) == 1 else UNMAPPED

    return index


def mean_ci(values: np.ndarray, digits: int = 4, seed: int = 0) -> dict[str, Any]:
    """Mean of per-item values with its 95% percentile bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    lo, hi = bootstrap_ci(np.mean, values, seed=seed)
    return {
        "mean": round(float(values.mean()), digits),
        "ci95": [round(lo, digits), round(hi, digits)],
        "n": len(values),
    }


def metric_ci(metric: Callable[..., float], *arrays: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Any metric of paired arrays with its 95% bootstrap interval (rows resampled jointly)."""
    if len(arrays[0]) == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    lo, hi = bootstrap_ci(metric, *arrays, seed=seed)
    return {
        "value": round(float(metric(*arrays)), 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "n": len(arrays[0]),
    }


def weighted_vote(
    neighbour_labels: np.ndarray, weights: np.ndarray, num_classes: int, fallback: int
) -> np.ndarray:
    """k-NN class per row: the class with the largest summed weight among the row's neighbours (negative
    weights count 0; labels < 0 are padding). Ties go to the lower class index; a row with no positive
    weight (e.g. BM25 found no shared word) gets `fallback`, the catalogue's most common class."""
    labels = np.asarray(neighbour_labels, dtype=np.int64)
    w = np.where(labels >= 0, np.clip(np.asarray(weights, dtype=np.float64), 0.0, None), 0.0)
    out = np.full(len(labels), fallback, dtype=np.int64)
    for i in range(len(labels)):
        votes = np.bincount(np.clip(labels[i], 0, None), weights=w[i], minlength=num_classes)
        if votes.max() > 0:
            out[i] = int(np.argmax(votes))
    return out


def precision_at_k_by_category(
    top_rows: np.ndarray, row_categories: np.ndarray, gold: np.ndarray, k: int = 10
) -> np.ndarray:
    """Per query, the share of its first k hits whose category is the query's gold category. A short list
    (padded with -1) counts the missing hits as misses: Search was asked for k."""
    top = np.asarray(top_rows, dtype=np.int64)[:, :k]
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    cats = np.where(top >= 0, np.asarray(row_categories)[np.clip(top, 0, None)], -1)
    return ((cats == np.asarray(gold)[:, None]) & (top >= 0)).sum(1) / k


def exact_top_k(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k (rows, similarities) of L2-normalized vectors, best first."""
    sims = queries @ docs.T
    k = min(k, docs.shape[0])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
    rows = np.take_along_axis(part, order, 1)
    return rows, np.take_along_axis(sims, rows, 1)


K = 10
"""Top-k depth of the real-query agreement figures (overlap@10, recall@10)."""


def overlap_per_query(a: np.ndarray, b: np.ndarray, k: int = K) -> np.ndarray:
    """|top-k(a) ∩ top-k(b)| / k per row; -1 padding never counts."""
    return np.array(
        [len((set(x[:k].tolist()) & set(y[:k].tolist())) - {-1}) / k for x, y in zip(a, b, strict=True)]
    )


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def teacher_name(bundle: Bundle) -> str:
    """Short name (minilm, mpnet) of the teacher whose space the bundle's index is in."""
    full = bundle.evaluation.get("retrieval", {}).get("product_teacher")
    if full is None:
        return bundle.manifest.training.get("preset", {}).get("methods", {}).get("product_teacher", "minilm")
    return next((short for short, name in TEACHERS.items() if name == full), "minilm")


def open_bundle(path: Path) -> Bundle:
    """The bundle with the server's default threads (one per model call), warmed up as the server does."""
    bundle = load_bundle(path, ThreadSettings())
    bundle.warm_up()
    return bundle


def services(bundle: Bundle) -> tuple[IntentService, RetrievalService]:
    """The served ClassifyIntent and Search, without response caches (a cache hit would time nothing)."""
    store = BundleStore(bundle)
    return IntentService(store, Limits(), cache_size=0), RetrievalService(store, Limits(), cache_size=0)


def run_timed(call: Callable[[str], Awaitable[Any]], texts: Sequence[str]) -> tuple[list[Any], np.ndarray]:
    """Each text through `call` one at a time (1 in flight) after a warm-up; the answers and the seconds
    each call took."""

    async def go() -> tuple[list[Any], np.ndarray]:
        for text in list(texts)[:WARM_UP_CALLS]:
            await call(text)
        answers, seconds = [], np.empty(len(texts))
        for i, text in enumerate(texts):
            start = time.perf_counter()
            answers.append(await call(text))
            seconds[i] = time.perf_counter() - start
        return answers, seconds

    return asyncio.run(go())


def latency(seconds: np.ndarray) -> dict[str, Any]:
    return {
        "p50_ms": round(float(np.median(seconds)) * 1e3, 3),
        "p90_ms": round(float(np.quantile(seconds, 0.9)) * 1e3, 3),
        "calls": len(seconds),
        "in_flight": 1,
    }
