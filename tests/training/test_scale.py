"""Teacher labelling and product embedding on Ray (training/scale.py): a local Ray with 2 CPUs gives the
same answers, in the same order, as the single-process path."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from server.featurize import Featurizer, FeaturizerConfig  # noqa: E402
from training.data.dataset import load_training_data  # noqa: E402
from training.data.synthetic import generate_catalogue  # noqa: E402
from training.finetune import EncoderClassifier, classifier_logits, load_encoder  # noqa: E402
from training.intent import build_intent_sets, train_intent_teacher  # noqa: E402
from training.presets import PRESETS, Methods  # noqa: E402
from training.retrieval import embed_products  # noqa: E402
from training.scale import ACTOR_ENV, LabelEngine  # noqa: E402
from training.teachers import SentenceTeacher, minilm_dir  # noqa: E402

# A distillation set of about 470 texts over the embedded catalogue's 48 leaves, labelled by the zero-shot
# teacher (no fine-tuning: seconds, not minutes).
PRESET = replace(
    PRESETS["tiny"],
    num_products=300,
    queries_per_product=1,
    label_queries_per_label=3,
    vocabulary_queries=60,
    methods=Methods(teacher_finetune=False),
)


@pytest.fixture(scope="module")
def engine() -> Iterator[LabelEngine]:
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": dict(ACTOR_ENV)})
    try:
        yield LabelEngine("ray", cpus=2)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def queries() -> list[str]:
    """300 query-like title spans of the embedded catalogue, in no particular length order."""
    titles = [p.title for p in generate_catalogue(300, seed=0).products]
    rng = random.Random(0)
    out = []
    for title in titles:
        words = title.lower().split()
        n = min(len(words), rng.choice((1, 2, 3, 4, 8)))
        start = rng.randrange(len(words) - n + 1)
        out.append(" ".join(words[start : start + n]))
    return out


def test_soft_labels_equal_single_process(engine: LabelEngine, queries: list[str]) -> None:
    # A "fine-tuned" classifier teacher: MiniLM with its top layer moved off the pretrained weights, so the
    # actors must get the driver's weights, not only load the package's.
    torch.manual_seed(0)
    tokenizer, encoder = load_encoder(minilm_dir())
    model = EncoderClassifier(encoder, 7).eval()
    pretrained = classifier_logits(model, tokenizer, queries[:20])
    with torch.no_grad():
        for p in encoder.encoder.layer[-1].parameters():
            p.add_(0.02 * torch.randn_like(p))
    # Batches of 64: five of them over the two actors, so the answers come back out of order.
    local = classifier_logits(model, tokenizer, queries, batch_size=64)
    on_ray = replace(engine, batch_size=64).classifier_logits("minilm", model, tokenizer, queries)
    assert on_ray.shape == local.shape == (len(queries), 7)
    np.testing.assert_allclose(on_ray, local, rtol=1e-5, atol=1e-5)
    assert (on_ray.argmax(1) == local.argmax(1)).all()
    assert not np.allclose(on_ray[:20], pretrained, atol=1e-3)


def test_product_embeddings_equal_single_process(engine: LabelEngine) -> None:
    catalogue = generate_catalogue(100, seed=1)
    teacher = SentenceTeacher(minilm_dir())
    local = embed_products(lambda texts: teacher.encode(texts, batch_size=64), catalogue, 2)
    on_ray = embed_products(
        lambda texts: replace(engine, batch_size=64).encode("minilm", texts), catalogue, 2
    )
    assert on_ray.shape == local.shape == (100, 2, teacher.dim)
    np.testing.assert_allclose(on_ray, local, rtol=1e-5, atol=1e-6)
    # In order: each product view's nearest neighbour is itself.
    flat = on_ray.reshape(-1, teacher.dim)
    assert (np.argmax(flat @ local.reshape(-1, teacher.dim).T, axis=1) == np.arange(len(flat))).all()


class RecordingEngine(LabelEngine):
    """The local engine, noting which texts the training code hands it."""

    def __init__(self) -> None:
        super().__init__("local")
        self.calls: list[tuple[str, int]] = []

    def encode(self, teacher: str, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        self.calls.append((teacher, len(texts)))
        return super().encode(teacher, texts, **kwargs)


def test_intent_teacher_hands_the_distillation_set_to_the_engine() -> None:
    """train_intent_teacher labels the whole distillation set (and only it) through its engine, with the
    same answers as without one: so the Ray engine of the tests above is what `--label-engine ray` uses."""
    data = load_training_data(None, PRESET.num_products, PRESET.heldout_fraction, 0)
    featurizer = Featurizer(minilm_dir() / "tokenizer.json", FeaturizerConfig(num_buckets=PRESET.num_buckets))
    sets = build_intent_sets(data, PRESET, featurizer, 0)
    engine = RecordingEngine()
    with_engine = train_intent_teacher("minilm", data, sets, PRESET, 0, engine)
    assert engine.calls == [("minilm", len(sets.texts))]
    without = train_intent_teacher("minilm", data, sets, PRESET, 0)
    np.testing.assert_array_equal(with_engine.train_logits, without.train_logits)
