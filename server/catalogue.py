"""The product side of a bundle as arrays: ids, titles, categories, the relevance lexicon and the rows and
vectors a category filter searches (server/manifest_parts.py PRODUCT_ARRAYS states each one's dtype and
shape).

Training computes them when it writes a bundle (`product_arrays`, `save_product_arrays`), and the server
opens them memory-mapped (`ProductTable.open`, numpy without pickle): opening costs the same at a hundred or
a million products, and every worker shares the pages through the page cache. A schema 2 bundle's
products.json is turned into the same arrays in memory at load, as it always was parsed.

A category filter (`ProductTable.category_filter`) is searched over its own vectors when the bundle stores
them contiguously (categories of at most EXACT_MAX_VECTORS vectors: a coarse scan, then the best rescored in
full), otherwise through the ANN index with enough over-fetch for the category's share of the catalogue
(server/runtime/index.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import overload

import numpy as np

from server.featurize import Featurizer, TitleLexicon, title_lexicon_arrays
from server.manifest import INDEX_SLOTS, OPTIONAL_ARRAYS, PRODUCT_ARRAYS, ArraySpec, BundleError, array_file
from server.manifest_parts import COARSE_DIMS
from server.runtime.index import RowFilter, slot_map

EXACT_MAX_VECTORS = 131072
"""Categories with at most this many vectors (products x views) keep theirs contiguous, in full and in a
coarse projection (server/runtime/index.py): scanning 16 MB of coarse vectors at the limit costs about what
over-fetching a category of that share from the ANN index would, and less below it."""


class StrColumn(Sequence[str]):
    """A read-only column of strings over either fixed-width bytes ([n] |S) or UTF-8 bytes and offsets."""

    def __init__(self, fixed: np.ndarray | None = None, blob: np.ndarray | None = None, offsets=None) -> None:
        self._fixed, self._blob, self._offsets = fixed, blob, offsets

    def __len__(self) -> int:
        return len(self._fixed) if self._fixed is not None else len(self._offsets) - 1

    def _one(self, i: int) -> str:
        if self._fixed is not None:
            return bytes(self._fixed[i]).decode("utf-8")
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return bytes(self._blob[start:end]).decode("utf-8")

    def tolist(self) -> list[str]:
        """Every string, decoded in one pass (much faster than iterating)."""
        if self._fixed is not None:
            return [b.decode("utf-8") for b in self._fixed.tolist()]
        blob, offsets = bytes(self._blob), self._offsets.tolist()
        return [blob[a:b].decode("utf-8") for a, b in pairwise(offsets)]

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._one(i)


class IdLookup:
    """Product id -> row, by binary search over the sorted ids (no dict of a million strings)."""

    def __init__(self, sorted_ids: np.ndarray, sorted_rows: np.ndarray) -> None:
        self._ids, self._rows = sorted_ids, sorted_rows
        self._width = sorted_ids.dtype.itemsize

    def get(self, product_id: str, default: int | None = None) -> int | None:
        row = int(self.rows([product_id])[0])
        return default if row < 0 else row

    def rows(self, product_ids: Sequence[str]) -> np.ndarray:
        """int64 row of each id, -1 where unknown: one binary search over the sorted ids for all of them
        (a ScoreRelevance of 100 ids looked up one by one spent ~0.4 ms here)."""
        keys = [pid.encode("utf-8") for pid in product_ids]
        out = np.full(len(keys), -1, dtype=np.int64)
        # numpy would silently cut a longer key to the width, and drops trailing NULs: neither can match.
        fits = np.array([0 < len(k) <= self._width and not k.endswith(b"\0") for k in keys], dtype=bool)
        if not len(self._ids) or not fits.any():
            return out
        wanted = np.array([k for k, ok in zip(keys, fits, strict=True) if ok], dtype=self._ids.dtype)
        at = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        found = self._ids[at] == wanted
        out[np.flatnonzero(fits)[found]] = self._rows[at[found]]
        return out

    def __getitem__(self, product_id: str) -> int:
        row = self.get(product_id)
        if row is None:
            raise KeyError(product_id)
        return row

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, str) and self.get(product_id) is not None

    def __len__(self) -> int:
        return len(self._ids)


class ProductTable:
    """What the services read per product: ids, titles, categories, the id lookup, the relevance lexicon's
    arrays, and category filters."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.ids = StrColumn(fixed=arrays["ids"])
        self.titles = StrColumn(blob=arrays["title_bytes"], offsets=arrays["title_offsets"])
        self.categories = arrays["categories"]
        self.row_of = IdLookup(arrays["sorted_ids"], arrays["sorted_rows"])
        self._rank: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.categories)

    @classmethod
    def open(cls, directory: Path, specs: dict[str, ArraySpec], n_labels: int, views: int) -> ProductTable:
        """The arrays memory-mapped; each one's dtype and shape must be the manifest's (which were checked
        against PRODUCT_ARRAYS), and the few that index others are range-checked (a pass over a few MB)."""
        arrays = {role: open_array(directory, spec) for role, spec in specs.items()}
        _check_ranges(arrays, n_labels, views)
        return cls(arrays)

    def lexicon(self, featurizer: Featurizer) -> TitleLexicon:
        return TitleLexicon({k: self.arrays[k] for k in TitleLexicon.ARRAYS}, featurizer)

    def stored_vectors(self, rows: np.ndarray, views: int) -> tuple[np.ndarray, np.ndarray]:
        """The first (title) view of those `rows` whose category keeps its vectors contiguous: (a bool mask
        over `rows`, float32 [mask.sum(), d]). Rows of the mapped array, where the ANN index's get costs
        ~2 us per vector (ScoreRelevance reads the vectors of every candidate by id)."""
        if self._rank is None:  # each row's place in category_rows: 4 bytes per product, made once
            members = self.arrays["category_rows"]
            self._rank = np.empty(len(members), dtype=np.int32)
            self._rank[members] = np.arange(len(members), dtype=np.int32)
        cats = self.categories[rows]
        starts = self.arrays["exact_start"][cats]
        found = starts >= 0
        at = starts[found] + (self._rank[rows[found]] - self.arrays["category_offsets"][cats[found]]) * views
        return found, self.arrays["exact_vectors"][at].astype(np.float32)

    def category_filter(self, labels: list[int], views: int) -> RowFilter:
        """The rows of products in any of `labels` (label indices)."""
        offsets, rows = self.arrays["category_offsets"], self.arrays["category_rows"]
        starts = self.arrays["exact_start"]
        parts = [(int(offsets[c]), int(offsets[c + 1]), int(starts[c])) for c in sorted(labels)]
        # One category (the common case) is a slice of the memory-mapped arrays: nothing copied.
        selected = [rows[a:b] for a, b, _ in parts]
        vectors = coarse = None
        if all(s >= 0 for _, _, s in parts):
            spans = [(s, s + (b - a) * views) for a, b, s in parts]
            vectors, coarse = (
                self.arrays[name][spans[0][0] : spans[0][1]]
                if len(spans) == 1
                else np.concatenate([self.arrays[name][a:b] for a, b in spans])
                for name in ("exact_vectors", "exact_coarse")
            )
        picked = selected[0] if len(selected) == 1 else np.concatenate(selected or [rows[:0]])
        share = len(picked) / max(len(self), 1)
        coarse_of = (coarse, self.arrays["coarse_projection"]) if coarse is not None else None
        labels_array = np.asarray(sorted(labels), dtype=np.int64)
        return RowFilter(picked, share, vectors, labels_array, self.categories, coarse_of)


def _check_ranges(arrays: dict[str, np.ndarray], n_labels: int, views: int) -> None:
    n = len(arrays["categories"])
    for role in ("title_offsets", "word_indptr", "char_indptr", "category_offsets"):
        a = arrays[role]
        end = {"title_offsets": "title_bytes", "word_indptr": "word_ids", "char_indptr": "char_ids"}
        limit = len(arrays[end[role]]) if role in end else n
        if len(a) and (a[0] != 0 or a[-1] != limit or np.any(np.diff(a) < 0)):
            raise BundleError(f"{array_file(role)}: offsets must run from 0 to {limit} without decreasing")
    for role, limit in (("categories", n_labels), ("sorted_rows", n), ("category_rows", n)):
        a = arrays[role]
        if len(a) and (int(a.min()) < 0 or int(a.max()) >= limit):
            raise BundleError(f"{array_file(role)}: values outside [0, {limit})")
    ends = arrays["exact_start"] + np.diff(arrays["category_offsets"]) * views
    stored = arrays["exact_start"] >= 0
    if np.any(arrays["exact_start"] < -1) or np.any(ends[stored] > len(arrays["exact_vectors"])):
        raise BundleError(f"{array_file('exact_start')}: a category's vectors run past exact_vectors")


def product_arrays(
    ids: Sequence[str],
    titles: Sequence[str],
    categories: np.ndarray,
    n_labels: int,
    featurizer: Featurizer,
    vectors: Callable[[np.ndarray], np.ndarray],
    lexicon: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every PRODUCT_ARRAYS array of a catalogue. `vectors(rows)` gives those rows' vectors, [rows, views,
    dim]; `lexicon` the TitleLexicon arrays when the caller has them (an update splices them)."""
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("product ids are not unique")
    if len(titles) != n or len(categories) != n:
        raise ValueError("ids, titles and categories differ in length")
    cats = np.asarray(categories, dtype=np.int64)
    if n and (cats.min() < 0 or cats.max() >= n_labels):
        raise ValueError(f"a category index is outside the {n_labels} labels")
    encoded = np.array(
        [i.encode("utf-8") for i in ids], dtype=f"S{max((len(i.encode()) for i in ids), default=1) or 1}"
    )
    order = np.argsort(encoded, kind="stable")
    title_blobs = [t.encode("utf-8") for t in titles]
    title_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(b) for b in title_blobs], out=title_offsets[1:])
    counts = np.bincount(cats, minlength=n_labels)
    category_offsets = np.zeros(n_labels + 1, dtype=np.int64)
    np.cumsum(counts, out=category_offsets[1:])
    category_rows = np.argsort(cats, kind="stable").astype(np.int64)
    probe = vectors(np.zeros(0, dtype=np.int64)) if n == 0 else vectors(np.arange(1))
    views, dim = probe.shape[1], probe.shape[2]
    exact_start = np.full(n_labels, -1, dtype=np.int64)
    small = [c for c in range(n_labels) if 0 < counts[c] * views <= EXACT_MAX_VECTORS]
    pieces, at = [], 0
    for c in small:
        rows = category_rows[category_offsets[c] : category_offsets[c + 1]]
        pieces.append(np.asarray(vectors(rows), dtype=np.float16).reshape(-1, dim))
        exact_start[c] = at
        at += len(rows) * views
    empty = [c for c in range(n_labels) if counts[c] == 0]
    exact_start[empty] = 0
    exact = np.concatenate(pieces) if pieces else np.zeros((0, dim), dtype=np.float16)
    mean, projection = coarse_projection(exact)
    return {
        "ids": encoded,
        "sorted_ids": encoded[order],
        "sorted_rows": order.astype(np.int64),
        "categories": cats.astype(np.int32),
        "title_offsets": title_offsets,
        "title_bytes": np.frombuffer(b"".join(title_blobs), dtype=np.uint8),
        **(lexicon if lexicon is not None else title_lexicon_arrays(titles, featurizer)),
        "category_offsets": category_offsets,
        "category_rows": category_rows,
        "exact_start": exact_start,
        "exact_vectors": exact,
        "coarse_projection": projection,
        "coarse_mean": mean,
        "exact_coarse": _coarse(exact, mean, projection),
    }


def coarse_projection(vectors: np.ndarray, sample: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """The mean and top COARSE_DIMS principal directions ([d, c]) of (a seeded sample of) `vectors`."""
    dim = vectors.shape[1]
    dims = min(COARSE_DIMS, dim)
    if len(vectors) < 2:
        return np.zeros(dim, dtype=np.float32), np.eye(dim, dims, dtype=np.float32)
    rows = np.random.default_rng(0).permutation(len(vectors))[:sample]
    x = np.asarray(vectors[np.sort(rows)], dtype=np.float32)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    projection = np.zeros((dim, dims), dtype=np.float32)
    projection[:, : min(dims, len(vt))] = vt[:dims].T
    return mean.astype(np.float32), projection


def _coarse(vectors: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    out = np.empty((len(vectors), projection.shape[1]), dtype=np.float32)
    for start in range(0, len(vectors), 65536):
        part = np.asarray(vectors[start : start + 65536], dtype=np.float32) - mean
        out[start : start + len(part)] = part @ projection
    return out


def open_array(directory: Path, spec: ArraySpec) -> np.ndarray:
    """One product array memory-mapped, with the dtype and shape the manifest gives it."""
    try:
        array = np.load(directory / spec.file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{spec.file}: cannot load as .npy without pickle ({e})") from e
    if not isinstance(array, np.ndarray) or array.dtype.str != spec.dtype or array.shape != spec.shape:
        raise BundleError(
            f"{spec.file}: holds {getattr(array, 'dtype', '?')}{list(getattr(array, 'shape', ()))}, "
            f"the manifest says {spec.dtype}{list(spec.shape)}"
        )
    # A plain ndarray over the same mapped pages: indexing a np.memmap makes a memmap object per slice,
    # which cost ~0.1 ms per ScoreRelevance of 100 ids.
    return array.view(np.ndarray)


def save_product_arrays(
    directory: Path, arrays: dict[str, np.ndarray], index_file: Path, slots: np.ndarray | None = None
) -> dict[str, ArraySpec]:
    """Writes each array (every PRODUCT_ARRAYS role, the OPTIONAL_ARRAYS ones present, and the slot of
    each of `index_file`'s vectors, server/runtime/index.py slot_map) as products_<role>.npy; returns the
    manifest's `arrays` for them. `slots` is that slot map when the caller made it already (slot_map
    reads every vector of the file)."""
    arrays = {**arrays, INDEX_SLOTS: slot_map(index_file) if slots is None else slots}
    specs = {}
    for role in [*PRODUCT_ARRAYS, *(r for r in OPTIONAL_ARRAYS if r in arrays)]:
        array = np.ascontiguousarray(arrays[role])
        np.save(directory / array_file(role), array, allow_pickle=False)
        specs[role] = ArraySpec(array_file(role), array.dtype.str, tuple(int(x) for x in array.shape))
    return specs


def from_products_json(
    path: Path, n_labels: int, featurizer: Featurizer, vectors: Callable[[np.ndarray], np.ndarray]
) -> ProductTable:
    """A schema 2 bundle's products.json, as the same arrays, built in memory."""
    name = path.name
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ids, titles, categories = raw["ids"], raw["titles"], raw["categories"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BundleError(f"{name}: must be JSON with ids, titles and categories lists ({e})") from e
    if not (len(ids) == len(titles) == len(categories)):
        raise BundleError(f"{name}: ids, titles and categories differ in length")
    if not all(isinstance(i, str) for i in ids) or not all(isinstance(t, str) for t in titles):
        raise BundleError(f"{name}: ids and titles must be strings")
    try:
        return ProductTable(
            product_arrays(ids, titles, np.asarray(categories, dtype=np.int64), n_labels, featurizer, vectors)
        )
    except ValueError as e:
        raise BundleError(f"{name}: {e}") from e
