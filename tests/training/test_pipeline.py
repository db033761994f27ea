"""The tiny preset end to end (trained once per session by the tiny_bundle fixture)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from server.bundle import load_bundle
from server.service.intent import IntentService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits


def test_manifest_records_evaluation(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    ev = manifest["evaluation"]
    assert manifest["training"]["teachers"] == ["sentence-transformers/all-MiniLM-L6-v2"]
    n_labels = ev["data"]["labels"]
    assert n_labels >= 30
    # Well above chance (1/n_labels) for teacher and student; the gates held.
    assert ev["intent"]["teacher_accuracy"] > 5 / n_labels
    assert ev["intent"]["student_int8_accuracy"] > 5 / n_labels
    assert ev["intent"]["quantization"]["score"] >= 0.995
    assert ev["retrieval"]["int8_fp32_min_cosine"] >= 0.98
    assert ev["retrieval"]["student_recall_at_10"] > 0.3
    assert ev["relevance"]["student"]["ndcg_at_10"] > ev["relevance"]["bm25"]["ndcg_at_10"] - 0.05
    for rule in ev["relevance"]["pre_rules"]:
        assert rule["precision"] is None or rule["precision"] >= 0.9  # held-out; mined at >= 0.95 on dev
    assert all(m["ci95"][1] >= 0.97 for m in ev["retention_gate"]["measured"].values())
    # Students are under 10% of BERT-base's 110M parameters.
    assert ev["sizes"]["intent_student_parameters"] < 11_000_000
    assert ev["sizes"]["encoder_student_parameters"] < 11_000_000
    assert set(manifest["training"]["stage_seconds"]) >= {
        "data",
        "intent_teacher",
        "intent_student",
        "retrieval",
        "relevance",
    }
    # Each distillation loss fell.
    losses = ev["intent"]["student_loss_by_epoch"]
    assert losses[-1] < losses[0] / 2


def test_title_queries_find_category_and_product(tiny_bundle: Path) -> None:
    """The foundation's acceptance check: a query built from a product title ranks that product's category
    first and finds the product among the top hits."""
    bundle = load_bundle(tiny_bundle)
    store = BundleStore(bundle)
    intent, retrieval = IntentService(store, Limits()), RetrievalService(store, Limits())
    rows = range(0, len(bundle.products.ids), max(1, len(bundle.products.ids) // 60))
    category_hits = product_hits = 0
    for row in rows:
        title = bundle.products.titles[row]
        expected = bundle.labels[bundle.products.categories[row]].id
        category_hits += asyncio.run(intent.classify(title, 1, 0)).categories[0].id == expected
        hits = asyncio.run(retrieval.search(title, None, 10, "")).hits
        product_hits += bundle.products.ids[row] in [h.product_id for h in hits]
    assert category_hits / len(rows) >= 0.8
    assert product_hits / len(rows) >= 0.8


def test_taxonomy_only_bundle_serves_intent(tmp_path: Path) -> None:
    """The cold start: classes and a few queries, no catalogue -> an intent-only bundle the server loads;
    the calls it cannot answer fail with a precondition error."""
    from dataclasses import replace

    from server.errors import FailedPrecondition
    from training.pipeline import train_bundle
    from training.presets import PRESETS

    data = tmp_path / "taxonomy"
    data.mkdir()
    (data / "classes.txt").write_text("Furniture > Sofas\nRugs > Area Rugs\nLighting > Table Lamps\n")
    rows = [
        ("grey velvet couch", "Sofas", "train"),
        ("jute rug", "Area Rugs", "train"),
        ("brass lamp", "Table Lamps", "train"),
        ("sectional", "Sofas", "dev"),
        ("round rug", "Area Rugs", "test"),
    ]
    (data / "queries.tsv").write_text(
        "query\tquery_class\tsplit\n" + "".join(f"{q}\t{c}\t{s}\n" for q, c, s in rows)
    )
    preset = replace(
        PRESETS["tiny"],
        num_products=200,
        queries_per_product=2,
        label_queries_per_label=20,
        vocabulary_queries=300,
        teacher_max_texts=500,
        teacher_epochs=1,
        epochs=3,
    )
    out = tmp_path / "bundle"
    report = train_bundle(preset, out, data, force=True)
    bundle = load_bundle(out)
    assert bundle.capabilities == ("intent",) and bundle.products is None
    assert [label.path for label in bundle.labels] == [
        "Furniture > Sofas",
        "Rugs > Area Rugs",
        "Lighting > Table Lamps",
    ]
    store = BundleStore(bundle)
    answer = asyncio.run(IntentService(store, Limits()).classify("area rugs", 1, 0))
    assert answer.categories[0].path == "Rugs > Area Rugs"
    with pytest.raises(FailedPrecondition, match="cannot serve retrieval"):
        asyncio.run(RetrievalService(store, Limits()).search("rug", None, 5, ""))
    assert report.evaluation["intent"]["eval"] == "real test split"
