"""Generated and augmented queries: deterministic, balanced over labels, varied, and about their label."""

from __future__ import annotations

from collections import Counter

from training.data.augment import augment_queries, generate_label_queries, word_runs

LABELS = ["Furniture > Accent Chairs", "Rugs > Area Rugs", "Bath Rugs & Mats", "Accent Chests / Cabinets"]


def test_generate_label_queries() -> None:
    pairs = generate_label_queries(LABELS, {"Rugs > Area Rugs": "large woven floor covering"}, 2000, 0)
    assert len(pairs) == 2000
    assert pairs == generate_label_queries(
        LABELS, {"Rugs > Area Rugs": "large woven floor covering"}, 2000, 0
    )
    assert pairs != generate_label_queries(LABELS, {}, 2000, 1)
    counts = Counter(label for _, label in pairs)
    assert set(counts) == set(LABELS) and max(counts.values()) - min(counts.values()) <= 1
    assert len({q for q, _ in pairs}) > 1000  # varied, not 4 labels repeated
    heads = {
        LABELS[0]: ("chair", "accent"),
        LABELS[1]: ("rug", "area", "woven", "floor"),
        LABELS[2]: ("rug", "mat", "bath"),
        LABELS[3]: ("chest", "cabinet", "accent"),
    }
    about = sum(any(h[:4] in q for h in heads[label]) for q, label in pairs)
    assert about / len(pairs) > 0.8
    assert all(q == q.lower() and q.strip() for q, _ in pairs)


def test_augment_queries() -> None:
    real = ["grey velvet couch", "jute rug 8x10", "brass table lamp"]
    out = augment_queries(real, 300, 0)
    assert len(out) == 300 and out == augment_queries(real, 300, 0)
    assert len(set(out)) > 60
    assert sum(o not in real for o in out) > 200


def test_word_runs_are_seeded_runs_of_distinct_words() -> None:
    words = ["oak", "lamp", "rug", "velvet", "sofa", "brass"]
    runs = word_runs(words, 50, 3)
    assert runs == word_runs(words, 50, 3) and runs != word_runs(words, 50, 4)
    for run in runs:
        parts = run.split()
        assert 2 <= len(parts) <= 4 and len(set(parts)) == len(parts) and set(parts) <= set(words)
