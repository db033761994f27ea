"""The tiered relevance head: a recall and a refine head combine into three grade probabilities, and n - 1
gates into n (ESCI's four)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.presets import PRESETS
from training.relevance import (
    FlatRelevanceHead,
    TieredRelevanceHead,
    catalogue_grade,
    relevance_query_vectors,
    train_relevance_head,
)
from training.relevance_text import tiered_probabilities


def test_tiered_probabilities() -> None:
    head = TieredRelevanceHead(4)
    probs = head(torch.randn(50, 4))
    assert probs.shape == (50, 3) and torch.allclose(probs.sum(-1), torch.ones(50), atol=1e-6)
    assert torch.allclose(head.log_probs(torch.zeros(1, 4)).exp(), head(torch.zeros(1, 4)))


def test_heads_learn_grades_from_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1200, 4)).astype(np.float32)
    grades = np.where(x[:, 1] < 0.3, 0, np.where(x[:, 0] > 0.6, 2, 1))
    for tiered in (True, False):
        preset = replace(PRESETS["tiny"], methods=replace(PRESETS["tiny"].methods, tiered_relevance=tiered))
        head = train_relevance_head(x, grades, None, preset, 0)
        assert isinstance(head, TieredRelevanceHead if tiered else FlatRelevanceHead)
        with torch.no_grad():
            pred = head(torch.from_numpy(x)).argmax(1).numpy()
        assert np.mean(pred == grades) > 0.9


def test_catalogue_grade() -> None:
    assert catalogue_grade(["oak", "tab"], 1, ["oak", "table"], 1) == 2  # typed prefix, same category
    assert catalogue_grade(["oak", "table"], 1, ["oak", "table"], 2) == 1
    assert catalogue_grade(["velvet"], 1, ["oak", "table"], 1) == 1
    assert catalogue_grade(["velvet"], 1, ["oak", "table"], 2) == 0


def test_tiered_probabilities_over_any_number_of_grades() -> None:
    """n - 1 gates give n probabilities summing to 1; two gates are the recall/refine formula exactly."""
    probs = tiered_probabilities(torch.rand(20, 3))
    assert probs.shape == (20, 4) and torch.allclose(probs.sum(-1), torch.ones(20), atol=1e-6)
    r, e = torch.rand(20), torch.rand(20)
    assert torch.equal(
        tiered_probabilities(torch.stack([r, e], -1)), torch.stack([1 - r, r * (1 - e), r * e], -1)
    )


def test_heads_learn_four_grades() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1600, 4)).astype(np.float32)
    grades = np.digitize(x[:, 0], [0.25, 0.5, 0.75])  # 0..3 by the first feature
    for tiered in (True, False):
        preset = replace(PRESETS["tiny"], methods=replace(PRESETS["tiny"].methods, tiered_relevance=tiered))
        head = train_relevance_head(x, grades, None, preset, 0, num_grades=4)
        with torch.no_grad():
            probs = head(torch.from_numpy(x)).numpy()
        assert probs.shape == (1600, 4)
        assert np.mean(probs.argmax(1) == grades) > 0.9


def test_pair_features_take_given_query_vectors_for_the_cosine_alone(tiny_bundle: Path) -> None:
    """The report's comparison of query models swaps each query's vector; every other feature, and the
    candidates' vectors, stay those the served models give."""
    from server.bundle import load_bundle
    from server.featurize import RelevanceColumn
    from training.relevance import Pairs, pair_features

    bundle = load_bundle(tiny_bundle)
    assert bundle.index is not None and bundle.products is not None
    rows = np.arange(12)
    titles = [bundle.products.titles[int(r)] for r in rows]
    pairs = Pairs(["oak table", "blue rug"], np.repeat([0, 1], 6), rows, titles, np.zeros(12, dtype=np.int64))

    def features(vectors: np.ndarray | None) -> np.ndarray:
        return pair_features(
            pairs,
            bundle.featurizer,
            tiny_bundle / "intent.onnx",
            tiny_bundle / "query_encoder.onnx",
            bundle.index,
            bundle.products.categories,
            seed=0,
            query_vectors=vectors,
        ).model_input

    served = features(None)
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(2, bundle.embedding_dim)).astype(np.float32) for _ in range(2))
    cosine = RelevanceColumn.COSINE
    keep = [c for c in range(served.shape[1]) if c != cosine]
    with_a, with_b, with_sum = features(a), features(b), features(a + b)
    for swapped in (with_a, with_b, with_sum):
        assert np.array_equal(swapped[:, keep], served[:, keep])
    # The cosine column is the candidates' vectors (whatever the query's) against the given vector.
    assert np.allclose(with_sum[:, cosine], with_a[:, cosine] + with_b[:, cosine], atol=1e-5)
    assert not np.allclose(with_a[:, cosine], served[:, cosine])
    # Unswapped, it is the encoder's own vector of the query (run alone here, beside the titles there:
    # int8 activations are quantized per run, so only close).
    own = bundle.query_encoder.run({"ids": bundle.featurizer.batch_ids(pairs.queries)})
    assert np.allclose(features(own)[:, cosine], served[:, cosine], atol=0.01)


def test_relevance_cosine_takes_the_served_query_students_vectors_when_asked(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """relevance_cosine gives the shipped int8 vectors of the model it names (what the server computes):
    the static word-piece model by default, the transformer query student when asked; "query_encoder", or
    a bundle directory without the named model, leaves the hashed encoder's (None); an unknown source is
    refused by name."""
    from server.bundle import load_bundle

    preset = PRESETS["tiny"]
    bundle = load_bundle(tiny_bundle)
    texts = ["oak dining table", "blue area rug"]
    name, vectors = relevance_query_vectors(preset, tiny_bundle)
    assert name == "query_static" == bundle.relevance_query_vector
    static = bundle.query_static.run({"input_ids": bundle.static_tokens.ids(texts)})
    assert vectors(texts) == pytest.approx(static, abs=1e-4)
    assert relevance_query_vectors(preset, tmp_path)[0] == "query_encoder"
    encoder = replace(preset, methods=replace(preset.methods, relevance_cosine="query_encoder"))
    name, vectors = relevance_query_vectors(encoder, tiny_bundle)
    assert name == "query_encoder" and vectors(["oak table"]) is None
    wanted = replace(preset, methods=replace(preset.methods, relevance_cosine="query_student"))
    name, vectors = relevance_query_vectors(wanted, tiny_bundle)
    student, featurize = bundle.query_model()
    assert name == "query_student"
    assert vectors(texts) == pytest.approx(student.run({"input_ids": featurize(texts)}), abs=1e-4)
    unknown = replace(preset, methods=replace(preset.methods, relevance_cosine="teacher"))
    with pytest.raises(ValueError, match="relevance_cosine 'teacher'"):
        relevance_query_vectors(unknown, tiny_bundle)
