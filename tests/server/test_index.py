"""The product index with several views per product: a product counts once, at its best view."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from usearch.index import Index

from server.runtime.index import ProductIndex, RowFilter


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
