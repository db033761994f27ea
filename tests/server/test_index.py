"""The product index with several views per product: a product counts once, at its best view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from usearch.index import Index

from server.runtime.index import ProductIndex


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
