"""The product ANN index: a usearch index opened memory-mapped, so it is never copied into the heap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401 - must load before usearch: the reverse order segfaults in onnxruntime's import
from usearch.index import Index

RESCORED = 32
"""A stored category larger than RESCORED x k x views vectors is scanned in its coarse projection first, and
that many of the best are scored in full. Measured on the 1% category (10,000 products, 20,000 vectors) of
the 1M grown catalogue, 50 queries: recall@10 against exact 0.908 at 8 (its misses within 0.005 of the 10th
score: copies the 64 coarse dims cannot tell apart), 0.966 at 16, 0.988 at 32, for 0.5 / 0.7 / 1.0 ms."""
OVERFETCH = 8.0
"""A filtered search through the ANN index asks for OVERFETCH x k x views / share hits, so that about eight
times the k it needs fall in the category (the index's own recall at that depth is what keeps recall@10
against exact filtered search high); it asks again for 4x as many when fewer than k did. In the 40%
category of the 1M grown catalogue, served at 8: 0.953 (0.940-0.964) over 500 queries (benchmarks/results/
scale-mixes). One-off, in process, over the 200 queries of the run before: 0.926 / 0.946 / 0.964 at 8 / 12 /
16, in 1.8 / 2.3 / 3.1 ms p50 (16 takes the filtered Search past twice the unfiltered one's); over another
200, 0.920 at 4."""
SEARCH_EXPANSION = 128
"""The graph walk's expansion (ef) every ProductIndex opens with, so that training's figures and Search
measure the same walk; sift-serve's --search-expansion overrides it. usearch's own default is 64: on the 793
real queries of the report's real_queries part, the default bundle's index found 0.917 of the exact top 10
at 64 and 0.963 at 128, for 0.18 ms more per search (0.315 against 0.139 ms p50; reports/wands)."""
HIT_COST = 50
"""One hit over-fetched from the index costs about as much as scanning this many coarse vectors (measured on
a 7,000-product bundle: 1.1 us per hit at 96 hits, 30 ns per coarse vector at 5,844): a filter whose
over-fetch costs less than its scan goes to the index even when its vectors are stored."""


@dataclass(frozen=True, slots=True)
class RowFilter:
    """The rows a category filter allows (server/catalogue.py builds it), and what searching them needs."""

    rows: np.ndarray
    """int64 rows of the products in the filter's categories."""
    share: float
    """len(rows) / the catalogue's products."""
    vectors: np.ndarray | None
    """float16 [len(rows) x views, dim], row by row in `rows` order, when the bundle stores them."""
    labels: np.ndarray
    """The filter's label indices."""
    categories: np.ndarray
    """The label index of every product row (to test a hit's membership)."""
    coarse: tuple[np.ndarray, np.ndarray] | None = None
    """With `vectors`: the same vectors, centred, in a few principal directions (float32 [len(vectors), c]),
    and the projection of a query into them (float32 [dim, c])."""

    def allows(self, rows: np.ndarray) -> np.ndarray:
        return np.isin(self.categories[rows], self.labels)


VECTOR_BLOCK = 8
"""usearch's dense index file starts with its vectors: the slot count and the bytes per vector as two uint32
(for fewer than 2^32 slots), then each slot's vector in the index's own scalar type."""


def file_vectors(path: Path, index: Index) -> np.ndarray:
    """The vectors block of the saved f16 usearch index `index` opened from `path`, memory-mapped: [slots,
    dim], row i the vector of slot i. The same pages usearch itself maps when it opens the file as a view."""
    if index.dtype.name != "F16":
        raise ValueError(f"{path.name}: not a usearch index of f16 vectors")
    dim = int(index.ndim)
    with path.open("rb") as f:
        head = f.read(VECTOR_BLOCK)
    if len(head) < VECTOR_BLOCK:
        raise ValueError(f"{path.name}: too short for a usearch index")
    slots, width = (int(x) for x in np.frombuffer(head, dtype="<u4"))
    if width != dim * 2 or VECTOR_BLOCK + slots * width > path.stat().st_size:
        raise ValueError(
            f"{path.name}: its vector block ({slots} slots of {width} bytes) is not one of f16 vectors of "
            f"{dim} dims within the file"
        )
    return np.memmap(path, dtype="<f2", mode="r", offset=VECTOR_BLOCK, shape=(slots, dim)).view(np.ndarray)


def slot_map(path: Path) -> np.ndarray:
    """Each key's slot in a saved f16 index (keys 0 .. len - 1, as bundles key vectors), int64: found by
    matching the vector usearch returns for the key with the file's vector block, and checked bit for bit.
    Slots follow the order vectors were inserted in, which a multi-threaded add and an update's removals
    and renames shuffle, so it is read, not assumed. Identical vectors may share a slot. ValueError when a
    key has no vector or no slot."""
    index = Index.restore(str(path), view=True)
    if index is None:
        raise ValueError(f"{path.name}: not a usearch index")
    n = len(index)
    block = file_vectors(path, index).view("<u2")
    weights = np.random.default_rng(0).integers(1, 2**63, size=block.shape[1], dtype=np.uint64) | np.uint64(1)

    def fingerprint(bits: np.ndarray) -> np.ndarray:  # uint64 per row, wrapping: equal rows, equal prints
        return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)

    chunk = 65536
    prints = np.concatenate([fingerprint(block[i : i + chunk]) for i in range(0, len(block), chunk)])
    order = np.argsort(prints, kind="stable")
    ordered = prints[order]
    slots = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        keys = np.arange(start, min(start + chunk, n), dtype=np.uint64)
        found = index.get(keys, dtype=np.float16)
        if any(v is None for v in found):
            raise ValueError(f"{path.name}: keys are not 0..{n - 1}")
        bits = np.stack(found).view("<u2")
        printed = fingerprint(bits)
        at = np.minimum(np.searchsorted(ordered, printed), len(ordered) - 1)
        slot = order[at]
        ok = (ordered[at] == printed) & np.all(block[slot] == bits, axis=1)
        if not ok.all():
            raise ValueError(f"{path.name}: {int((~ok).sum())} vectors are not in the file's vector block")
        slots[start : start + len(keys)] = slot
    return slots


class ProductIndex:
    """Each product has `views` vectors (several views of it: title, category and title, ...), stored under
    keys row * views + v; the id map of rows lives in the bundle's product arrays. A product's score is its
    best view's.

    With `slots` (slot_map's, from the bundle) usearch opens the file without its key lookups and vectors
    are read from the file's vector block by slot: usearch's table of every key, tens of bytes per vector,
    is then not built in the private memory of each process that opens the index (benchmarks/results/
    scale-mixes measures it at a million products). Without, usearch's `get` finds vectors by key."""

    def __init__(self, path: Path, views: int = 1, slots: np.ndarray | None = None) -> None:
        self._index = Index.restore(str(path), view=True, enable_key_lookups=slots is None)
        if self._index is None:
            raise ValueError(f"{path.name}: not a usearch index")
        self._index.expansion_search = SEARCH_EXPANSION
        self.views = views
        self._slotted: tuple[np.ndarray, np.ndarray] | None = None  # (slot of each key, the file's vectors)
        if slots is not None:
            block = file_vectors(path, self._index)
            if len(slots) != len(self._index) or (
                len(slots) and (int(slots.min()) < 0 or int(slots.max()) >= len(block))
            ):
                raise ValueError(
                    f"{len(slots)} slots for {len(self._index)} vectors, or a slot outside the file's "
                    f"{len(block)}"
                )
            self._slotted = (slots, block)

    @property
    def expansion(self) -> int:
        """The graph walk's expansion (ef) for every search: higher finds more of the exact top k, and is
        slower. An opened index has SEARCH_EXPANSION, which training evaluates with; `--search-expansion`
        sets another in the server."""
        return int(self._index.expansion_search)

    @expansion.setter
    def expansion(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"search expansion must be at least 1, not {value}")
        self._index.expansion_search = value

    @property
    def dim(self) -> int:
        return int(self._index.ndim)

    @property
    def metric(self) -> str:
        return str(self._index.metric_kind.name).lower()

    def __len__(self) -> int:
        """Number of vectors (products x views)."""
        return len(self._index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k rows and cosine similarities, nearest first."""
        matches = self._index.search(query, k * self.views)
        keys = matches.keys.astype(np.int64)
        scores = 1.0 - matches.distances.astype(np.float32)
        if self.views == 1:
            return keys, scores
        # Hits come best first, so a product's first hit is its best view. A few dozen hits: a set beats
        # np.unique's sort here.
        seen: set[int] = set()
        order = []
        for i, row in enumerate((keys // self.views).tolist()):
            if row not in seen:
                seen.add(row)
                order.append(i)
                if len(order) == k:
                    break
        return keys[order] // self.views, scores[order]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The first (title) view of these rows, float32 [len(rows), dim]."""
        return self._get(rows.astype(np.int64) * self.views)

    def all_views(self, rows: np.ndarray) -> np.ndarray:
        """Every view of these rows, float32 [len(rows), views, dim]."""
        keys = (rows.astype(np.int64)[:, None] * self.views + np.arange(self.views)).reshape(-1)
        return self._get(keys).reshape(len(rows), self.views, self.dim)

    def _get(self, keys: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._slotted is not None:
            slots, block = self._slotted
            return block[slots[keys]].astype(np.float32)
        return np.stack(self._index.get(keys.astype(np.uint64))).astype(np.float32)

    def filtered_search(self, query: np.ndarray, k: int, where: RowFilter) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows among `where`'s and their cosine similarities, nearest first: over-fetched from the ANN
        index and filtered when that is cheaper than scanning the filter's stored vectors (a large share of
        the catalogue), else a scan of the stored vectors (`_scan`), else (a large category without stored
        vectors that the graph leaves short of k) the same over-fetch through usearch's exhaustive search."""
        k = min(k, len(where.rows))
        if k == 0:
            return where.rows[:0], np.zeros(0, dtype=np.float32)
        count = math.ceil(OVERFETCH * k * self.views / max(where.share, 1e-9))
        if where.vectors is None or count * HIT_COST < len(where.vectors):
            found = self._overfetch(query, k, where, count, exact=False)
            if found is not None:
                return found
        if where.vectors is not None:
            return self._scan(query, k, where)
        # A large category the graph leaves short of k: usearch's exhaustive search (SIMD over the mapped
        # vectors, ~140 ms at 2M f16 vectors on one core), not `exact_search`'s index.get of every one of the
        # category's vectors (3-8 s for 418,000 products).
        found = self._overfetch(query, k, where, count, exact=True)
        return found if found is not None else self.exact_search(query, where.rows, k)

    def _overfetch(
        self, query: np.ndarray, k: int, where: RowFilter, count: int, exact: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The best k of `where`'s rows among the index's top `count` hits, asking for 4x as many while
        fewer than k distinct rows are the filter's; None when that cannot work: the approximate search
        would need most of the index, or returned fewer hits than asked (the graph reaches no more from
        this query: on the 1M grown catalogue a few queries in a hundred reach only the 33 vectors of a
        cluster of near-copies, and asking again for up to 786,432 returned the same 33)."""
        while True:
            if not exact and count >= len(self):
                return None
            count = min(count, len(self))
            matches = self._index.search(query, count, exact=exact)
            keys = matches.keys.astype(np.int64) // self.views
            keep = where.allows(keys)
            if np.unique(keys[keep]).size >= k:
                return self._best_rows(keys[keep], matches.distances[keep], k)
            if len(keys) < count or count == len(self):
                return None
            count *= 4

    def _scan(self, query: np.ndarray, k: int, where: RowFilter) -> tuple[np.ndarray, np.ndarray]:
        """The filter's stored vectors scored against the query: all of them when there are few, else the
        RESCORED x k x views best of a coarse scan (float32 in 64 dims through BLAS, a third of the bytes
        of the float16 vectors)."""
        assert where.vectors is not None
        candidates = None
        wanted = RESCORED * k * self.views
        if where.coarse is not None and len(where.vectors) > wanted:
            coarse, projection = where.coarse
            approximate = coarse @ (query @ projection)
            candidates = np.sort(np.argpartition(-approximate, wanted - 1)[:wanted])
        vectors = np.asarray(
            where.vectors if candidates is None else where.vectors[candidates], dtype=np.float32
        )
        norms = np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(query), 1e-12)
        scores = vectors @ query / norms
        positions = np.arange(len(vectors)) if candidates is None else candidates
        order = np.argsort(-scores, kind="stable")[: k * self.views]
        return self._best_rows(
            where.rows[positions[order] // self.views], (1.0 - scores[order]).astype(np.float32), k
        )

    @staticmethod
    def _best_rows(rows: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first k distinct rows of hits ordered nearest first (a row's first hit is its best view)."""
        scores = 1.0 - distances.astype(np.float32)
        _, first = np.unique(rows, return_index=True)
        first = np.sort(first)[:k]
        return rows[first], scores[first]

    def exact_search(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the given rows (used for category filters)."""
        k = min(k, len(rows))
        if k == 0:
            return rows[:0], np.zeros(0, dtype=np.float32)
        scores = (self.all_views(rows) @ query).max(axis=1)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.argsort(-scores[top], kind="stable")]
        return rows[top], scores[top]
