"""sift-bench scale's measures: exact scores over a grown catalogue, and the graph check of clustered copies
against mixes of real products (on the tiny bundle)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

import benchmarks.scale_graph as graph
from benchmarks.scale import add_scale_parser, exact_scores
from benchmarks.scale_catalogue import KINDS, Grown
from server.manifest import Manifest
from training.update_teacher import PROBES


def test_exact_scores_take_each_products_best_view() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 2, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    categories = np.arange(30, dtype=np.int32) % 3
    grown = Grown([f"P{i}" for i in range(30)], ["t"] * 30, categories, v.astype(np.float16), 0)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    rows, scores = exact_scores(grown, q, 1)
    assert rows.tolist() == list(range(1, 30, 3))
    want = np.einsum("qd,pvd->qpv", q / np.linalg.norm(q, axis=1, keepdims=True), v[rows]).max(axis=2)
    np.testing.assert_allclose(scores, want, atol=2e-3)


def test_graph_check_copies_cluster_and_mixes_spread(tiny_bundle: Path, monkeypatch) -> None:
    monkeypatch.setattr(graph, "QUERIES", 12)
    monkeypatch.setattr(graph, "COPIES", 50)
    result = graph.graph_check(tiny_bundle, 500, [8], KINDS)
    runs = {r["catalogue"]: r for r in result["runs"]}
    assert set(runs) == {"copies", "mixes"}
    for r in runs.values():
        for ef in ("ef64", "ef256"):
            assert 0 <= r[ef]["recall_at_10"] <= r[ef][f"recall_at_10_within_{graph.TIE}"] <= 1
    # Ten copies of one product are a near-tie; ten mixes of different pairs are not.
    assert runs["copies"]["exact_top10_spread"] < runs["mixes"]["exact_top10_spread"]
    assert "| copies | 8 |" in graph.graph_markdown(result, [])
    mixes = graph.graph_check(tiny_bundle, 500, [4, 8], ("mixes",))["runs"]
    assert [(r["catalogue"], r["connectivity"]) for r in mixes] == [("mixes", 4), ("mixes", 8)]
    with pytest.raises(ValueError, match="'mix'"):
        graph.catalogue(np.zeros((3, 1, 4), dtype=np.float32), 10, "mix")


def test_graph_kinds_are_checked_when_parsed() -> None:
    parser = argparse.ArgumentParser()
    add_scale_parser(parser.add_subparsers())
    args = parser.parse_args(["scale", "--graph-check", "10", "--graph-kinds", "mixes"])
    assert args.graph_kinds == ("mixes",)
    assert parser.parse_args(["scale"]).graph_kinds == KINDS
    with pytest.raises(SystemExit):
        parser.parse_args(["scale", "--graph-kinds", "mixes,mix"])


def test_grown_mixes_keep_the_real_products_and_leave_their_clusters(tiny_bundle: Path) -> None:
    from benchmarks.scale_catalogue import grow

    m = Manifest.read(tiny_bundle).components.index.count
    copies, mixes = grow(tiny_bundle, m + 400), grow(tiny_bundle, m + 400, kind="mixes")
    np.testing.assert_allclose(mixes.vectors[:m], copies.vectors[:m], atol=1e-3)
    assert mixes.ids == copies.ids and mixes.titles == copies.titles
    real = grow(tiny_bundle, m).vectors[:, 0].astype(np.float32)

    def nearest_real(v: np.ndarray) -> np.ndarray:
        return (v[m:, 0].astype(np.float32) @ real.T).max(axis=1)

    # A copy is its product plus noise (cosine about 0.93); a mix lies between two products.
    assert np.median(nearest_real(copies.vectors)) > 0.9 > np.median(nearest_real(mixes.vectors))


def test_a_grown_catalogue_is_noisy_throughout_and_an_ungrown_one_is_the_bundles(tiny_bundle: Path) -> None:
    from benchmarks.scale_catalogue import grow
    from server.bundle import load_bundle

    bundle = load_bundle(tiny_bundle)
    m = len(bundle.products)
    real = bundle.index.all_views(np.arange(m))
    same = grow(tiny_bundle, m, kind="mixes")
    np.testing.assert_allclose(same.vectors.astype(np.float32), real, atol=1e-3)
    heads = grow(tiny_bundle, m + 400, kind="mixes").vectors[:m].astype(np.float32)
    # The bundle's own products carry the same noise as the grown ones (a cosine of about 0.93 to their
    # vectors), so none of them stands out of the grown catalogue's cloud; but for the ones update's
    # teacher check reads, which keep the teacher's vectors.
    assert m > PROBES
    np.testing.assert_allclose(heads[:PROBES], real[:PROBES], atol=1e-3)
    cosines = np.einsum("pvd,pvd->pv", heads[PROBES:], real[PROBES:])
    assert 0.85 < float(np.median(cosines)) < 0.97


def test_the_recall_table_names_its_query_count_only_when_every_size_recorded_the_same() -> None:
    from benchmarks.scale import _over_queries

    assert _over_queries([{"recall_queries": 500}, {"recall_queries": 500}]) == ", over 500 queries"
    assert _over_queries([{"recall_queries": 500}, {}]) == ""
    assert _over_queries([{"recall_queries": 500}, {"recall_queries": 200}]) == ""


def test_a_cached_catalogue_is_reused_only_by_the_same_version_of_grow(
    tiny_bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    import benchmarks.scale_catalogue as catalogue

    m = Manifest.read(tiny_bundle).components.index.count
    grown, index_file, _ = catalogue.cached(tiny_bundle, m + 20, tmp_path, kind="mixes")
    assert index_file.parent.name == f"grown-mixes-{m + 20}-v{catalogue.GROWN}"
    again, same_file, _ = catalogue.cached(tiny_bundle, m + 20, tmp_path, kind="mixes")
    assert same_file == index_file and again.ids == grown.ids
    monkeypatch.setattr(catalogue, "GROWN", catalogue.GROWN + 1)
    _, other_file, _ = catalogue.cached(tiny_bundle, m + 20, tmp_path, kind="mixes")
    assert other_file != index_file and other_file.is_file()
