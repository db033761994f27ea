"""Intent distillation pieces on small data: sets by source, stacking, and the BERT2DNN student."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.featurize import Featurizer, FeaturizerConfig
from training.data.dataset import load_training_data
from training.intent import (
    build_intent_sets,
    shot_prototypes,
    stack_logits,
    student_logits,
    train_intent_student,
)
from training.presets import PRESETS
from training.teachers import minilm_dir

PRESET = replace(
    PRESETS["tiny"],
    num_products=300,
    queries_per_product=3,
    label_queries_per_label=10,
    epochs=6,
    batch_size=32,
)


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(minilm_dir() / "tokenizer.json", FeaturizerConfig(num_buckets=PRESET.num_buckets))


def write_taxonomy(root: Path) -> Path:
    (root / "classes.txt").write_text(
        "Furniture > Sofas\nRugs > Area Rugs\tlarge floor rugs\nLighting > Table Lamps\n"
    )
    rows = ["query_id\tquery\tquery_class\tsplit"]
    rows += [
        f"{i}\t{q}\t{c}\t{s}"
        for i, (q, c, s) in enumerate(
            [
                ("grey velvet couch", "Sofas", "train"),
                ("jute rug 8x10", "Area Rugs", "train"),
                ("brass lamp", "Table Lamps", "train"),
                ("sectional sofa", "Sofas", "dev"),
                ("round rug", "Area Rugs", "test"),
                ("gift card", "", "test"),
            ]
        )
    ]
    (root / "queries.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_taxonomy_sets_by_source(tmp_path: Path, featurizer: Featurizer) -> None:
    data = load_training_data(write_taxonomy(tmp_path), 300, 0.1, 0)
    assert data.labels == ["Furniture > Sofas", "Rugs > Area Rugs", "Lighting > Table Lamps"]
    assert not data.serves_products and data.descriptions["Rugs > Area Rugs"] == "large floor rugs"
    sets = build_intent_sets(data, PRESET, featurizer, 0)
    assert list(sets.sources) == [
        "real_train_queries",
        "title_substrings",
        "label_queries",
        "augmented_real_queries",
        "vocabulary_queries",
    ]
    assert sets.sources["label_queries"] == 30 and sets.sources["augmented_real_queries"] == 60
    assert len(sets.texts) == sum(sets.sources.values()) == len(sets.hard)
    # Augmented text is unlabelled; generated queries carry their source label.
    start = sum(list(sets.sources.values())[:3])
    assert (sets.hard[start:] == -1).all()
    assert sets.eval_texts == ["round rug", "gift card"] and sets.eval_labels.tolist() == [1, -1]
    assert sets.dev_texts == ["sectional sofa"]
    # Test queries never leak into the distillation set.
    assert "round rug" not in sets.texts and "gift card" not in sets.texts
    # Without label queries, that source is gone.
    off = replace(PRESET, methods=replace(PRESET.methods, label_queries=False))
    assert "label_queries" not in build_intent_sets(data, off, featurizer, 0).sources


def test_stacking_averages_softened_distributions() -> None:
    a = np.array([[4.0, 0.0, 0.0]])
    b = np.array([[0.0, 4.0, 0.0]])
    assert np.array_equal(stack_logits([a], 2.0), a)
    stacked = stack_logits([a, b], 2.0)
    probs = np.exp(stacked / 2.0)
    probs /= probs.sum()
    soft = lambda z: np.exp(z / 2.0) / np.exp(z / 2.0).sum()  # noqa: E731
    assert np.allclose(probs, (soft(a) + soft(b)) / 2)
    assert stacked[0, 0] == pytest.approx(stacked[0, 1])


def test_few_shot_prototypes_move_toward_their_labels_queries_and_the_rest_stay() -> None:
    prototypes = np.eye(3, dtype=np.float32)
    vecs = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    shots = shot_prototypes(prototypes, vecs, np.array([0, 0, 2]))
    # Label 0: its prototype plus the mean of its two queries, normalized; label 1 has no query.
    assert np.allclose(shots[0], np.array([1.0, 0.5, 0.5]) / np.linalg.norm([1.0, 0.5, 0.5]))
    assert np.allclose(shots[1], prototypes[1]) and np.allclose(shots[2], prototypes[2])
    assert np.allclose(prototypes, np.eye(3))  # the label prototypes themselves are left as they were


def test_student_learns_teacher_and_without_soft_labels(featurizer: Featurizer) -> None:
    data = load_training_data(None, 300, 0.1, 0)
    sets = build_intent_sets(data, PRESET, featurizer, 0)
    n = len(data.labels)
    # A "teacher" that knows the labels: the student must learn it, and its loss must fall.
    teacher = np.where(np.eye(n)[np.maximum(sets.hard, 0)] > 0, 6.0, 0.0).astype(np.float32)
    student, history = train_intent_student(sets, teacher, featurizer, n, PRESET, 0)
    assert history[-1] < history[0] / 2
    logits = student_logits(student, featurizer, sets.eval_texts)
    assert logits.shape == (len(sets.eval_texts), n)
    # ~45 substrings of held-out products over 48 classes: chance is 0.02, short substrings are ambiguous.
    assert np.mean(logits.argmax(1) == sets.eval_labels) > 0.3
    hard_only = replace(PRESET, methods=replace(PRESET.methods, soft_labels=False))
    student, history = train_intent_student(sets, teacher, featurizer, n, hard_only, 0)
    assert history[-1] < history[0]


def test_every_preset_keeps_students_under_a_tenth_of_bert_base() -> None:
    from training.students import IntentStudent, QueryEncoderStudent, num_parameters

    for preset in PRESETS.values():
        intent = IntentStudent(preset.num_buckets, preset.intent_dim, preset.intent_hidden, 200)
        encoder = QueryEncoderStudent(preset.num_buckets, preset.encoder_dim, 768)
        assert num_parameters(intent) < 11_000_000, preset.name
        assert num_parameters(encoder) < 11_000_000, preset.name
