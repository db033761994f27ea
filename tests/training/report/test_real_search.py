"""The real_queries part's index questions (training/report/real_search.py) on small usearch indexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from server.runtime.index import ProductIndex
from training.report.real_search import exact_rows, expansion_sweep, relevance_cosine


def _index(tmp_path: Path, n: int, views: int, dim: int = 12) -> tuple[ProductIndex, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, views, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True)
    index = Index(ndim=dim, metric="cos", dtype="f32")
    # One thread: a graph built concurrently differs from run to run, and a walk as wide as the index
    # missed a node of one (recall@10 0.9875 in one CI run).
    index.add(np.arange(n * views, dtype=np.uint64), vecs.reshape(n * views, dim), threads=1)
    index.save(str(tmp_path / "index.usearch"))
    return ProductIndex(tmp_path / "index.usearch", views), vecs


def test_exact_rows_rank_products_by_their_best_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("training.report.real_search.BLOCK", 7)  # several blocks, the last one short
    index, vecs = _index(tmp_path, 40, 2)
    queries = np.random.default_rng(1).normal(size=(5, 12)).astype(np.float32)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.einsum("nvd,qd->qnv", vecs, q).max(axis=2)
    want = np.argsort(-best, axis=1, kind="stable")[:, :10]
    assert exact_rows(index, queries).tolist() == want.tolist()


def test_the_sweep_finds_the_exact_top_10_when_the_walk_covers_the_index(tmp_path: Path) -> None:
    index, vecs = _index(tmp_path, 60, 1)
    teacher = vecs[:8, 0]
    served = teacher + np.random.default_rng(2).normal(scale=0.05, size=teacher.shape).astype(np.float32)
    index.expansion = 50
    result = expansion_sweep(index, served, teacher, expansions=(60, 200))
    assert index.expansion == 50  # restored
    assert result["served_expansion"] == 50
    for row in result["rows"]:
        assert row["served_recall_at_10"]["mean"] == 1.0 and row["teacher_recall_at_10"]["mean"] == 1.0
        # Exact on both sides, so the overlap through the index is the exact overlap.
        assert row["overlap_at_10"]["mean"] == result["exact_overlap_at_10"]["mean"]
        assert row["search"]["calls"] == 8
    assert "fp32_exact_overlap_at_10" not in result


def test_the_sweep_gives_the_fp32_vectors_exact_overlap_against_the_same_teacher_rows(tmp_path: Path) -> None:
    index, vecs = _index(tmp_path, 60, 1)
    teacher = vecs[:8, 0]
    served = teacher + np.random.default_rng(2).normal(scale=0.05, size=teacher.shape).astype(np.float32)
    result = expansion_sweep(index, served, teacher, expansions=(60,), fp32=teacher)
    assert result["fp32_exact_overlap_at_10"]["mean"] == 1.0  # the teacher's own vectors
    same = expansion_sweep(index, served, teacher, expansions=(60,), fp32=served)
    assert same["fp32_exact_overlap_at_10"] == same["exact_overlap_at_10"]


def test_relevance_cosine_ranks_the_teacher_itself_first(tmp_path: Path) -> None:
    index, _ = _index(tmp_path, 30, 2)
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(20, 12)).astype(np.float32)
    noisy = teacher + rng.normal(scale=0.3, size=teacher.shape).astype(np.float32)
    unrelated = rng.normal(size=teacher.shape).astype(np.float32)
    out = relevance_cosine(index, teacher, {"same": teacher, "noisy": noisy, "unrelated": unrelated})
    rows = {r["model"]: r for r in out["rows"]}
    assert out["products"] == 30 and out["queries"] == 20
    assert rows["same"]["spearman_pooled"] == 1.0
    assert 1.0 > rows["noisy"]["spearman_pooled"] > rows["unrelated"]["spearman_pooled"]
    lo, hi = rows["noisy"]["ci95"]
    assert lo <= rows["noisy"]["spearman_pooled"] <= hi
