"""ScoreRelevance with either kind of relevance student: the text student (what training ships now) and
the MLP over four features (what older bundles hold, which keep loading and serving)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from server.bundle import MANIFEST, BundleError, load_bundle
from server.featurize import RELEVANCE_FEATURES
from server.manifest import FileEntry
from server.rules import GRADES
from server.service.relevance import CandidateInput, RelevanceService
from server.service.store import BundleStore
from server.service.validation import Limits
from training.export import export_onnx
from training.relevance import TieredRelevanceHead


def _edit(bundle: Path, change) -> None:
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _score(bundle: Path, query: str, candidates: list[CandidateInput]):
    service = RelevanceService(BundleStore(load_bundle(bundle)), Limits())
    return asyncio.run(service.score(query, candidates)).scores


def as_feature_bundle(bundle: Path) -> None:
    """Rewrites a bundle's relevance model as bundles before the text student held it: an MLP over the four
    features, its manifest entry without a kind."""
    torch.manual_seed(0)
    export_onnx(
        TieredRelevanceHead(len(RELEVANCE_FEATURES)),
        torch.zeros(2, len(RELEVANCE_FEATURES)),
        "features",
        "probabilities",
        bundle / "relevance.onnx",
    )

    def older(m: dict) -> None:
        rel = m["components"]["relevance"]
        rel.pop("kind", None)
        rel["inputs"][0]["shape"] = ["batch", len(RELEVANCE_FEATURES)]
        rel["feature_names"] = list(RELEVANCE_FEATURES)
        m["files"]["relevance.onnx"] = FileEntry.of(bundle / "relevance.onnx").to_json()

    _edit(bundle, older)


def _candidates(bundle: Path, n: int) -> tuple[list[CandidateInput], str]:
    products = load_bundle(bundle).products
    rows = random.Random(0).sample(range(len(products.ids)), n)
    cands = [CandidateInput(product_id=products.ids[r]) for r in rows[: n // 2]]
    cands += [CandidateInput(title=products.titles[r]) for r in rows[n // 2 :]]
    return cands, " ".join(products.titles[rows[0]].split()[:2])


def test_tiny_bundle_ships_the_text_student(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.relevance_kind == "text_mlp"
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    assert manifest["components"]["relevance"]["kind"] == "text_mlp"
    ev = manifest["evaluation"]["relevance"]
    assert ev["student_kind"] == "text_mlp"
    assert ev["distillation"]["unlabelled_pairs"] >= ev["distillation"]["labelled_pairs"]


def test_both_kinds_serve(bundle_copy: Path, tmp_path: Path) -> None:
    cands, query = _candidates(bundle_copy, 40)
    text = _score(bundle_copy, query, cands)
    as_feature_bundle(bundle_copy)
    assert load_bundle(bundle_copy).relevance_kind == "feature_mlp"
    features = _score(bundle_copy, query, cands)
    for scores in (text, features):
        assert len(scores) == len(cands)
        assert all(0.0 <= s.score <= 1.0 and s.grade in GRADES for s in scores)
    # Same rules, different models: the model-scored candidates differ.
    assert [s.score for s in text] != [s.score for s in features]


def test_text_student_ranks_the_named_product_first(tiny_bundle: Path) -> None:
    """A query made of a product's title words, against that product and 19 others: the product ranks in
    the top 3 for most queries (scored by id, so by the text student or a golden rule)."""
    products = load_bundle(tiny_bundle).products
    rng = random.Random(1)
    found = 0
    trials = 30
    for _ in range(trials):
        rows = rng.sample(range(len(products.ids)), 20)
        words = products.titles[rows[0]].split()
        start = rng.randrange(max(1, len(words) - 2))
        query = " ".join(words[start : start + 3])
        scores = _score(tiny_bundle, query, [CandidateInput(product_id=products.ids[r]) for r in rows])
        values = np.array([s.score for s in scores])
        found += values[0] >= np.sort(values)[-3]
    assert found / trials >= 0.7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda rel: rel.update(kind="cross_encoder"),
            "components.relevance.kind: 'cross_encoder' is not one this server serves",
        ),
        (
            lambda rel: rel.update(kind="feature_mlp"),
            r"components.relevance.inputs.features: last dimension \d+ != 4",
        ),
        (
            lambda rel: rel.update(feature_names=list(RELEVANCE_FEATURES)),
            "components.relevance.feature_names: a text_mlp relevance model reads",
        ),
    ],
)
def test_bad_relevance_kind_refused(bundle_copy: Path, change, message: str) -> None:
    _edit(bundle_copy, lambda m: change(m["components"]["relevance"]))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)
