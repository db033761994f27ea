"""The served_relevance part on the session's tiny bundle and its kept stage cache, with a staged query file
written here (no real data set is read)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from server.bundle import load_bundle
from training.report.context import Context, ReportSettings
from training.report.markdown import write_report
from training.report.served_relevance import FIXED_PRODUCTS, agree, served_relevance_part, trained_on


def _staged_queries(bundle: Path, data_dir: Path) -> list[str]:
    """Shopper-like queries (the first words of catalogue titles) as a WANDS-style query file."""
    titles = load_bundle(bundle).products.titles
    queries = sorted({" ".join(titles[i].split()[:3]).lower() for i in range(0, len(titles), 97)})[:12]
    folder = data_dir / "wands-queries"
    folder.mkdir(parents=True)
    rows = "".join(f"{i}\t{q}\t\ttest\n" for i, q in enumerate(queries))
    (folder / "queries.tsv").write_text("query_id\tquery\tquery_class\tsplit\n" + rows)
    return queries


def _staged_esci_pairs(bundle: Path, data_dir: Path) -> tuple[int, int]:
    """ESCI-style pairs: a title's first words against that title (Exact) or another title (Irrelevant); 40
    in the test split, 10 each in train and dev. Returns the test pairs and the distinct queries of all."""
    titles = load_bundle(bundle).products.titles
    folder = data_dir / "esci-pairs"
    folder.mkdir(parents=True)
    queries = []
    for split, start, count in (("test", 0, 40), ("train", 7, 10), ("dev", 13, 10)):
        with (folder / f"pairs_{split}.csv").open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["query", "product_title", "esci_label"])
            for n, i in enumerate(range(start, start + count * 31, 31)):
                queries.append(" ".join(titles[i].split()[:2]).lower())
                other = titles[(i + len(titles) // 2) % len(titles)]
                out.writerow([queries[-1], titles[i], "E"] if n % 2 == 0 else [queries[-1], other, "I"])
    return 40, len(set(queries))


def _settings(tmp_path: Path, bundle: Path, stages: Path) -> ReportSettings:
    return ReportSettings(
        default_bundle=bundle, default_stages=stages, data_dir=tmp_path / "data", output=tmp_path / "out"
    )


def test_served_scores_follow_the_distilled_teacher(
    tiny_bundle: Path, tiny_stages: Path, tmp_path: Path
) -> None:
    queries = _staged_queries(tiny_bundle, tmp_path / "data")
    esci_pairs, esci_queries = _staged_esci_pairs(tiny_bundle, tmp_path / "data")
    result = served_relevance_part(Context(_settings(tmp_path, tiny_bundle, tiny_stages)))
    # The pairs file's queries are a query source too (as many as are distinct from the others).
    n = result["queries"]
    assert result["sources"] == {"WANDS queries": len(queries), "ESCI pairs queries": esci_queries}
    assert len(queries) < n <= len(queries) + esci_queries
    assert result["query_vector"] == "query_static"  # the default recipe's relevance cosine
    fixed, retrieved = result["sets"]["fixed"], result["sets"]["retrieved"]
    assert fixed["pairs"] == n * FIXED_PRODUCTS
    assert n * 10 <= retrieved["pairs"] <= n * 20
    for s in (fixed, retrieved):
        lo, hi = s["spearman_pooled_ci"]
        assert lo <= s["spearman_pooled"] <= hi
        assert 0 <= s["grade_agreement"] <= 1
    # Scores paired with the wrong teacher answers would agree at about 0; the distilled student agrees.
    assert fixed["spearman_pooled"] > 0.5
    assert np.isfinite(retrieved["spearman_mean_per_query"])
    assert fixed["by_source"]["WANDS queries"]["queries"] == len(queries)
    signals = fixed["signals"]
    assert "served cosine feature (query_static)" in signals
    assert "teacher part: cross-encoder" in signals

    # ESCI pairs: a query is its own title's first words, so the served model, the teacher and BM25 all
    # tell the Exact pairs from the rest; every row but BM25's carries its paired difference from BM25.
    esci = result["esci_pairs_test"]
    assert esci["pairs"] == esci_pairs and esci["labels"]["E"] == esci_pairs // 2
    auc = esci["auc"]
    served, bm25 = "served ScoreRelevance (titles as text)", "BM25 (query against the split's titles)"
    for name in (served, f"teacher: {result['teacher']}", bm25):
        assert auc[name]["auc"] > 0.8, name
    assert auc[served]["vs_bm25"] in ("beats", "loses", "within noise")
    assert "difference" not in auc[bm25]
    # The tiny bundle trained on its synthetic catalogue, so every split's pairs are unseen: all 60 scored.
    every = result["esci_pairs_all"]
    assert every["pairs"] == esci_pairs + 20 and every["labels"]["E"] == every["pairs"] // 2
    assert every["auc"][served]["auc"] > 0.8

    out = tmp_path / "report"
    out.mkdir()
    write_report({"served_relevance": result | {"command": "sift-train report", "seconds": 1.0}}, out)
    text = (out / "README.md").read_text()
    assert "## Served relevance on real query text (default bundle)" in text
    assert f"| fixed | {fixed['pairs']:,} |" in text
    assert "| served ScoreRelevance (titles as text) |" in text
    assert "ESCI pairs, every split (none of them in this bundle's training data)" in text


def test_trained_on_reads_the_manifests_training_data(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    folder = tmp_path / "esci-pairs"
    assert not trained_on(bundle, folder)  # synthetic
    bundle.manifest.training["data"] = str(folder / "pairs_train.csv")
    assert trained_on(bundle, folder)
    bundle.manifest.training["data"] = str(folder)
    assert trained_on(bundle, folder)
    bundle.manifest.training["data"] = str(tmp_path / "flipkart-names")
    assert not trained_on(bundle, folder)
    # Judged data is recorded with its kind in front (training/data/dataset.py).
    bundle.manifest.training["data"] = f"pairs:{folder / 'pairs_train.csv'}"
    assert trained_on(bundle, folder)
    bundle.manifest.training["data"] = f"esci:{folder}"
    assert trained_on(bundle, folder)
    bundle.manifest.training["data"] = f"taxonomy:{tmp_path / 'wands-queries'}"
    assert not trained_on(bundle, folder)


def test_agreement_at_the_teachers_query_levels() -> None:
    """A student that ranks each query's pairs as the teacher does, but at levels of its own per query."""
    rng = np.random.default_rng(0)
    teacher = rng.random(60)
    groups = [np.arange(i, i + 10) for i in range(0, 60, 10)]
    offsets = np.repeat(rng.normal(0, 1, 6), 10)
    out = agree(teacher + offsets, teacher, groups, list(range(6)), 0)
    assert out["spearman_pooled"] < 0.9
    assert out["spearman_pooled_teacher_means"] == 1.0 and out["spearman_mean_per_query"] == 1.0
    assert out["spearman_query_means"] < 1.0


def test_a_bundle_without_its_stage_cache_is_refused_by_name(tiny_bundle: Path, tmp_path: Path) -> None:
    _staged_queries(tiny_bundle, tmp_path / "data")
    settings = _settings(tmp_path, tiny_bundle, tmp_path / "no-stages")
    with pytest.raises(SystemExit, match="--keep-stages"):
        served_relevance_part(Context(settings))
