"""The product index with several views per product: a product counts once, at its best view."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from usearch.index import Index

from server.runtime.index import SEARCH_EXPANSION, ProductIndex, RowFilter, slot_map


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_views_dedupe_and_best_view(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, views, dim = 50, 3, 16
    vecs = _unit(rng.normal(size=(n, views, dim)))
    index = Index(ndim=dim, metric="cos", dtype="f32")
    index.add(np.arange(n * views, dtype=np.uint64), vecs.reshape(n * views, dim))
    index.save(str(tmp_path / "index.usearch"))
    served = ProductIndex(tmp_path / "index.usearch", views)

    query = vecs[7, 2]  # the third view of product 7
    rows, scores = served.search(query, 5)
    assert rows[0] == 7 and scores[0] > 0.99
    assert len(set(rows.tolist())) == len(rows) == 5
    assert np.all(np.diff(scores) <= 1e-6)
    best = (vecs @ query).max(axis=1)
    assert set(rows.tolist()) == set(np.argsort(-best)[:5].tolist())
    # vectors() is the title view; exact search takes the best view per product.
    assert np.allclose(served.vectors(np.array([7])), vecs[7, 0], atol=1e-6)
    exact_rows, exact_scores = served.exact_search(query, np.arange(n), 5)
    assert exact_rows.tolist() == np.argsort(-best)[:5].tolist()
    assert np.allclose(exact_scores, np.sort(best)[::-1][:5], atol=1e-5)


def test_importing_the_index_first_does_not_crash_onnxruntime() -> None:
    """usearch 2.26 loaded before onnxruntime 1.32 makes onnxruntime's import segfault; the index module
    loads onnxruntime first. Found while profiling; a fresh interpreter shows it."""
    import subprocess
    import sys

    code = "import numpy, server.runtime.index, onnxruntime; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.returncode


class _Island:
    """A usearch index whose graph search reaches only `reach` vectors, however many are asked for (as a
    cluster of near-copies can leave it); its exhaustive search is the real one. Counts the searches."""

    def __init__(self, index: Index, reach: int) -> None:
        self.index, self.reach, self.asked = index, reach, []

    def __len__(self) -> int:
        return len(self.index)

    def search(self, query: np.ndarray, count: int, exact: bool = False) -> SimpleNamespace:
        self.asked.append((count, exact))
        m = self.index.search(query, count, exact=exact)
        keep = slice(None) if exact else slice(self.reach)
        return SimpleNamespace(keys=m.keys[keep], distances=m.distances[keep])


def test_a_filter_the_graph_leaves_short_goes_exhaustive_at_once(tmp_path: Path) -> None:
    """The 40% category's p99 of 2.9 s at 1M: the graph returned 33 hits for every over-fetch up to 786,432,
    then exact search fetched all 836,000 of the category's vectors. Now a short answer stops the over-fetch
    and usearch's exhaustive search answers, with the exact filtered top k."""
    rng = np.random.default_rng(1)
    n, views, dim = 400, 2, 16
    vecs = _unit(rng.normal(size=(n, views, dim)))
    index = Index(ndim=dim, metric="cos", dtype="f32")
    index.add(np.arange(n * views, dtype=np.uint64), vecs.reshape(n * views, dim))
    index.save(str(tmp_path / "index.usearch"))
    served = ProductIndex(tmp_path / "index.usearch", views)
    island = _Island(served._index, reach=6)
    served._index = island
    categories = (rng.random(n) < 0.4).astype(np.int32)
    rows = np.flatnonzero(categories == 1)
    where = RowFilter(rows, len(rows) / n, None, np.array([1]), categories)
    fetched = []
    served._get = lambda keys: fetched.append(len(keys))  # exact_search's index.get must not be reached
    for query in _unit(rng.normal(size=(5, dim))):
        island.asked.clear()
        got, scores = served.filtered_search(query, 10, where)
        best = (vecs[rows] @ query).max(axis=1)
        assert got.tolist() == rows[np.argsort(-best)[:10]].tolist()
        np.testing.assert_allclose(scores, np.sort(best)[::-1][:10], atol=1e-5)
        assert [exact for _, exact in island.asked] == [False, True]  # one graph search, then exhaustive
    assert fetched == []


def _shuffled_f16_index(path: Path, n: int, views: int, dim: int, seed: int) -> np.ndarray:
    """An f16 index built as bundles build theirs (keys row x views + view, added on two threads), then
    changed as `sift-train update` changes one: keys removed, the last rows renamed into their places, new
    ones added. Returns the final vectors by key, [n x views, dim]."""
    rng = np.random.default_rng(seed)
    vecs = _unit(rng.normal(size=(n * views, dim)))
    index = Index(ndim=dim, metric="cos", dtype="f16")
    index.add(np.arange(n * views, dtype=np.uint64), vecs, threads=2)
    gone, last = np.array([3, 10]), np.array([n - 2, n - 1])
    keys = lambda rows: (rows[:, None] * views + np.arange(views)).reshape(-1).astype(np.uint64)  # noqa: E731
    index.remove(keys(gone))
    index.rename(keys(last), keys(gone))
    vecs[keys(gone).astype(np.int64)] = vecs[keys(last).astype(np.int64)]
    vecs = vecs[: (n - 2) * views]
    fresh = _unit(rng.normal(size=(3 * views, dim)))
    index.add(np.arange(len(vecs), len(vecs) + len(fresh), dtype=np.uint64), fresh)
    index.save(str(path))
    return np.concatenate([vecs, fresh]).astype(np.float16)


def test_index_slots_serve_what_key_lookups_serve(tmp_path: Path) -> None:
    """With the bundle's slot map, the index opens without usearch's key lookups and reads vectors from
    the file's own vector block; every answer is the one the key lookups give, after an update's removals,
    renames and additions too (which move keys away from their slots)."""
    path = tmp_path / "index.usearch"
    n, views, dim = 300, 2, 16
    by_key = _shuffled_f16_index(path, n, views, dim, seed=2)
    slots = slot_map(path)
    assert len(slots) == len(by_key) and not np.array_equal(slots, np.arange(len(slots)))
    plain, slotted = ProductIndex(path, views), ProductIndex(path, views, slots)
    rows = np.arange(len(by_key) // views)
    assert np.array_equal(slotted.all_views(rows), by_key.reshape(-1, views, dim).astype(np.float32))
    assert np.array_equal(slotted.all_views(rows), plain.all_views(rows))
    assert np.array_equal(slotted.vectors(rows[::7]), plain.vectors(rows[::7]))
    categories = rows % 5
    where = RowFilter(rows[categories == 1], 0.2, None, np.array([1]), categories)
    for query in _unit(np.random.default_rng(3).normal(size=(5, dim))):
        for a, b in (
            (slotted.search(query, 10), plain.search(query, 10)),
            (slotted.exact_search(query, rows[:40], 5), plain.exact_search(query, rows[:40], 5)),
            (slotted.filtered_search(query, 5, where), plain.filtered_search(query, 5, where)),
        ):
            assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])


def test_index_slots_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "index.usearch"
    _shuffled_f16_index(path, 40, 1, 8, seed=4)
    slots = slot_map(path)
    for bad in (slots[:-1], np.where(slots == slots.max(), 10**6, slots)):
        with pytest.raises(ValueError, match="slot"):
            ProductIndex(path, 1, bad)
    f32 = Index(ndim=8, metric="cos", dtype="f32")
    f32.add(np.arange(4, dtype=np.uint64), _unit(np.ones((4, 8))))
    f32.save(str(tmp_path / "f32.usearch"))
    with pytest.raises(ValueError, match="f16"):
        slot_map(tmp_path / "f32.usearch")


def test_search_expansion_is_set_on_the_graph_and_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vecs = _unit(rng.normal(size=(300, 8)))
    index = Index(ndim=8, metric="cos", dtype="f32")
    index.add(np.arange(300, dtype=np.uint64), vecs)
    index.save(str(tmp_path / "index.usearch"))
    served = ProductIndex(tmp_path / "index.usearch")
    assert served.expansion == SEARCH_EXPANSION != 64  # Sift's, which training measures with; not usearch's
    served.expansion = 300
    assert served._index.expansion_search == 300
    # A walk as wide as the index finds the exact top 10.
    rows, _ = served.search(vecs[5], 10)
    assert rows.tolist() == np.argsort(-(vecs @ vecs[5]), kind="stable")[:10].tolist()
    with pytest.raises(ValueError, match="at least 1"):
        served.expansion = 0
    assert served.expansion == 300
