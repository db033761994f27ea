"""Grown catalogues for `sift-bench scale`: a real bundle's products copied to any size, each copy its
product's real teacher vectors plus noise, with one category holding 40% of the products.

The serving cost of a catalogue does not depend on how its vectors were made, so a catalogue of a million
products needs no million teacher calls; its index is built with the same usearch settings as training's.
Each size is built once into a cache directory outside the repository (vectors, product columns and the
index), since the index alone takes minutes at a million products.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.manifest import Manifest
from server.runtime.index import ProductIndex
from training.catalogue_update import load_catalogue_side
from training.update_teacher import PROBES

NOISE = 0.02  # per dimension: a copy keeps a cosine of about 0.93 to its product
BIG_SHARE = 0.4  # the share of products in the one big category
CODES = 50_000  # distinct model codes appended to copied titles (a vocabulary that grows like a real one's)
GROWN = 2
"""The version of what grow() makes (2: noisy throughout but for update's probes). It names the cached
catalogue and bundle, so a cache grown by another version is never reused for this one's figures."""
KINDS = ("copies", "mixes")  # how a catalogue is grown: grow() here, catalogue() in benchmarks/scale_graph.py


@dataclass(frozen=True)
class Grown:
    ids: list[str]
    titles: list[str]
    categories: np.ndarray  # int32 label index per row
    vectors: np.ndarray  # float16 [n, views, dim], unit rows
    big: int  # label index of the 40% category


def grow(base: Path, n: int, seed: int = 0, kind: str = "copies") -> Grown:
    """`n` products from the bundle at `base`: its own first, then noisy copies, or with `kind` "mixes"
    noisy mixes of two of them (weight uniform in [0, 1]; the title and category of the one weighing
    more): as spread as real products, where copies make clusters of near-ties that an HNSW graph does not
    link (`sift-bench scale --graph-check`).

    Up to the bundle's own size the catalogue is the bundle's, as it is. A grown one is noisy throughout,
    the bundle's own products too, but for the first PROBES: `sift-train update` checks its product
    teacher against their stored vectors, so those keep the teacher's. Left clean, the bundle's own 6,000
    stood out of a million noisy ones (nearer every query by the noise's cosine loss, two of each exact top
    10), and the graph walk missed the noisy near-ties behind them (README, "Catalogue scale")."""
    manifest = Manifest.read(base)
    side = load_catalogue_side(base, manifest)
    spec = manifest.components.index
    assert spec is not None
    index = ProductIndex(base / spec.file, spec.views)
    m = len(side.ids)
    real = index.all_views(np.arange(m))
    rng = np.random.default_rng(seed)
    source = np.concatenate([np.arange(min(n, m)), rng.integers(0, m, max(0, n - m))])
    mixing = np.random.default_rng(seed + 1)  # its own stream: copies stay what they were
    other = mixing.integers(0, m, n)
    weight = np.where(np.arange(n) < m, 1.0, 0.5 + mixing.random(n) / 2)
    vectors = np.empty((n, spec.views, real.shape[-1]), dtype=np.float16)
    for start in range(0, n, 65536):  # in blocks: float32 noise for a million products is 3 GB
        rows = source[start : start + 65536]
        v = real[rows]
        if kind == "mixes":
            w = weight[start : start + len(rows), None, None].astype(np.float32)
            v = w * v + (1 - w) * real[other[start : start + len(rows)]]
            v /= np.linalg.norm(v, axis=-1, keepdims=True)
        v = v + (rng.standard_normal((len(rows), *real.shape[1:])) * NOISE).astype(np.float32)
        # Nothing grown: the bundle's own catalogue; grown: only update's probes keep their vectors.
        clean = np.arange(start, start + len(rows)) < (m if n <= m else min(PROBES, m))
        v[clean] = real[rows[clean]]
        vectors[start : start + len(rows)] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    codes = rng.integers(0, CODES, n)
    titles = [side.titles[s] if i < m else f"{side.titles[s]} x{codes[i]:05d}" for i, s in enumerate(source)]
    ids = [side.ids[s] if i < m else f"S{i:08d}" for i, s in enumerate(source)]
    categories = np.asarray(side.categories, dtype=np.int32)[source]
    big = int(np.bincount(categories).argmax())
    categories[rng.permutation(n)[: int(n * BIG_SHARE)]] = big
    return Grown(ids, titles, categories, vectors, big)


def cache_name(n: int, kind: str) -> str:
    """What names the cached catalogue of `n` products of `kind`, and the bundles built from it."""
    return f"{kind}-{n}-v{GROWN}"


def cached(base: Path, n: int, cache: Path, seed: int = 0, kind: str = "copies") -> tuple[Grown, Path, float]:
    """The grown catalogue of `n` products and its index file, from `cache` when built before; also the
    seconds its index took to build (measured when it was built)."""
    from training.retrieval import write_index

    where = cache / f"grown-{cache_name(n, kind)}"
    done = where / "done.json"
    if done.is_file():
        meta = json.loads(done.read_text())
        cols = json.loads((where / "columns.json").read_text(encoding="utf-8"))
        grown = Grown(
            cols["ids"],
            cols["titles"],
            np.load(where / "categories.npy"),
            np.load(where / "vectors.npy", mmap_mode="r"),
            meta["big"],
        )
        return grown, where / "index.usearch", meta["index_seconds"]
    where.mkdir(parents=True, exist_ok=True)
    grown = grow(base, n, seed, kind)
    np.save(where / "vectors.npy", grown.vectors, allow_pickle=False)
    np.save(where / "categories.npy", grown.categories, allow_pickle=False)
    (where / "columns.json").write_text(
        json.dumps({"ids": grown.ids, "titles": grown.titles}, ensure_ascii=False), encoding="utf-8"
    )
    start = time.perf_counter()
    write_index(grown.vectors.astype(np.float32), where / "index.usearch")
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"n": n, "big": grown.big, "index_seconds": round(seconds, 1)}))
    return grown, where / "index.usearch", seconds
