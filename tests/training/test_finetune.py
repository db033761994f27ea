"""Teacher fine-tuning with layer freezing (cached frozen layers) and dropping, on a tiny task."""

from __future__ import annotations

import numpy as np
import torch

from training.finetune import (
    _bottom,
    _top,
    classifier_logits,
    cross_encoder_probabilities,
    finetune_classifier,
    finetune_cross_encoder,
    layer_embeddings,
    load_encoder,
)
from training.teachers import SentenceTeacher, minilm_dir

CLASSES = ["sofa", "rug", "lamp"]
TEXTS = [
    "grey velvet sofa",
    "leather couch",
    "sectional sofa",
    "sleeper sofa bed",
    "loveseat",
    "jute area rug",
    "round wool rug",
    "runner rug",
    "shag rug 8x10",
    "outdoor rug",
    "brass table lamp",
    "floor lamp",
    "bedside lamp",
    "desk lamp led",
    "arc lamp",
]
LABELS = np.repeat(np.arange(3), 5)


def test_frozen_cache_matches_full_forward() -> None:
    tokenizer, encoder = load_encoder(minilm_dir())
    encoder.eval()
    enc = tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        full = encoder(**enc).last_hidden_state
        hidden, run = _bottom(encoder, enc, 4)
        assert torch.allclose(_top(encoder, hidden, run, 4), full, atol=1e-5)


def test_prototype_head_then_fine_tuning() -> None:
    prototypes = SentenceTeacher(minilm_dir()).encode(CLASSES)
    result = finetune_classifier(
        minilm_dir(),
        TEXTS,
        LABELS,
        3,
        init_head=prototypes,
        train_top=1,
        epochs=3,
        batch_size=8,
        max_length=16,
    )
    assert result.losses[-1] < result.losses[0]
    # Embeddings and the bottom 5 layers are frozen: only the top layer and the head train.
    assert result.trainable_parameters < result.total_parameters / 4
    logits = classifier_logits(result.model, result.tokenizer, TEXTS)
    assert logits.shape == (15, 3) and np.mean(logits.argmax(1) == LABELS) >= 0.9


def test_dropping_layers_shrinks_the_model() -> None:
    full = finetune_classifier(minilm_dir(), TEXTS, LABELS, 3, epochs=1, batch_size=8, max_length=16)
    dropped = finetune_classifier(
        minilm_dir(), TEXTS, LABELS, 3, keep_layers=2, epochs=1, batch_size=8, max_length=16
    )
    assert len(dropped.model.encoder.encoder.layer) == 2
    assert dropped.total_parameters < full.total_parameters - 3 * 1_700_000
    layers = layer_embeddings(minilm_dir(), TEXTS[:3], max_length=16)
    assert len(layers) == 7 and layers[-1].shape == (3, 384)


def test_cross_encoder_learns_grades() -> None:
    queries = ["sofa"] * 6 + ["rug"] * 6
    titles = TEXTS[:3] + TEXTS[5:8] + TEXTS[5:8] + TEXTS[10:13]
    grades = np.array([2, 2, 2, 0, 0, 0, 2, 2, 2, 0, 0, 0])
    result = finetune_cross_encoder(
        minilm_dir(), queries, titles, grades, train_top=2, epochs=4, batch_size=4
    )
    assert result.losses[-1] < result.losses[0]
    probs = cross_encoder_probabilities(result.model, result.tokenizer, queries, titles)
    assert probs.shape == (12, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_cross_encoder_has_a_head_per_grade() -> None:
    """Four grades (ESCI's): the teacher's probabilities have four columns."""
    queries, titles = ["sofa"] * 4, TEXTS[:2] + TEXTS[5:7]
    result = finetune_cross_encoder(
        minilm_dir(),
        queries,
        titles,
        np.array([3, 2, 1, 0]),
        train_top=1,
        epochs=1,
        batch_size=4,
        num_grades=4,
    )
    probs = cross_encoder_probabilities(result.model, result.tokenizer, queries, titles)
    assert probs.shape == (4, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
