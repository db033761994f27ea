"""The text relevance student: it reads the query's and title's n-grams, learns what the four features
cannot tell, exports to one-input ONNX, and its unlabelled pairs come from every source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.featurize import (
    TEXT_RELEVANCE_WIDTH,
    Featurizer,
    FeaturizerConfig,
    query_grams,
    text_relevance_input,
    title_lexicon_arrays,
)
from training.data.dataset import load_training_data
from training.export import export_onnx, run_onnx
from training.relevance_text import (
    TextRelevanceStudent,
    distillation_pairs,
    predict,
    soften,
    text_rows,
    train_text_student,
)
from training.teachers import minilm_dir
from training.transformer_student import FIRST_WORD_ID


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(Path(minilm_dir()) / "tokenizer.json", FeaturizerConfig(num_buckets=1 << 14))


def _colour_task(
    featurizer: Featurizer, n: int, seed: int, four: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose grade depends on the words alone, with the four features held at zero: exact when the
    title is the product the query names, partial when only the thing agrees, irrelevant otherwise; with
    `four`, ESCI's grades: a colour alone agreeing is complement (1), the thing substitute (2), exact 3."""
    rng = np.random.default_rng(seed)
    colours, things = ["red", "blue", "green", "black"], ["sofa", "lamp", "rug", "desk", "mirror"]
    titles = [f"{c} {t}" for c in colours for t in things]
    lexicon = title_lexicon_arrays(titles, featurizer)
    x, y = [], []
    for _ in range(n):
        qc, qt = rng.integers(len(colours)), rng.integers(len(things))
        grams = query_grams(featurizer.words(f"{colours[qc]} {things[qt]}"), featurizer)
        row = int(rng.integers(len(titles)))
        tc, tt = divmod(row, len(things))
        if four:
            y.append(3 if (tc, tt) == (qc, qt) else 2 if tt == qt else 1 if tc == qc else 0)
        else:
            y.append(2 if (tc, tt) == (qc, qt) else 1 if tt == qt else 0)
        x.append(text_relevance_input(grams, lexicon, np.array([row]), np.zeros((1, 4), np.float32), 1 << 14))
    return np.concatenate(x), np.array(y)


def test_student_learns_from_the_words(featurizer: Featurizer, tmp_path: Path) -> None:
    x, y = _colour_task(featurizer, 3000, 0)
    x_test, y_test = _colour_task(featurizer, 500, 1)
    model = train_text_student(x, None, y, 1 << 14, 16, 32, 8, 2.0, 0.7, True, 0)
    assert np.mean(predict(model, x_test).argmax(1) == y_test) > 0.95
    # The exported graph is the trained one: one float input of the documented width.
    export_onnx(model, torch.from_numpy(x_test[:2]), "features", "probabilities", tmp_path / "m.onnx")
    onnx_probs = run_onnx(tmp_path / "m.onnx", "relevance", "features", x_test)
    assert onnx_probs.shape == (len(x_test), 3)
    assert np.abs(onnx_probs - predict(model, x_test)).max() < 1e-4


def test_student_learns_a_teachers_soft_scores(featurizer: Featurizer) -> None:
    """Unlabelled rows (grade -1) learn from the teacher alone; the expected grade follows the teacher's."""
    x, y = _colour_task(featurizer, 2000, 2)
    teacher = np.eye(3, dtype=np.float32)[y] * 0.8 + 0.2 / 3
    model = train_text_student(x, teacher, np.full(len(y), -1), 1 << 14, 16, 32, 8, 2.0, 1.0, False, 0)
    scores = predict(model, x) @ np.array([0.0, 0.5, 1.0])
    assert np.corrcoef(scores, teacher @ np.array([0.0, 0.5, 1.0]))[0, 1] > 0.9


def test_soften() -> None:
    p = np.array([[0.7, 0.2, 0.1]], dtype=np.float32)
    assert np.allclose(soften(p, 1.0), p, atol=1e-6)
    hot = soften(p, 4.0)
    assert np.isclose(hot.sum(), 1.0) and hot.max() < p.max() and hot.argmax() == 0


def test_distillation_pairs_cover_every_source(featurizer: Featurizer) -> None:
    data = load_training_data(None, 400, 0.1, 0)
    n = len(data.titles)
    words = ["driftwood", "velvet", "lantern", "walnut", "outdoor"]
    real = ["oak coffee table", "blue velvet sofa"]
    pairs = distillation_pairs(
        data, featurizer, lambda t: np.tile(np.arange(10), (len(t), 1)), 1200, 0, words, real
    )
    assert set(pairs.sources) == {"title_substrings", "real_queries_retrieved", "generated_queries_retrieved"}
    # Each real query and ten augmented copies, against eight candidates each (fewer when they repeat).
    assert "oak coffee table" in pairs.queries
    assert 4 * 22 <= pairs.sources["real_queries_retrieved"] <= 8 * 22
    assert 900 <= len(pairs.rows) <= 1300 and sum(pairs.sources.values()) == len(pairs.rows)
    assert pairs.rows.min() >= 0 and pairs.rows.max() < n
    assert pairs.group.max() == len(pairs.queries) - 1
    # Substring queries are scored against their own product among others.
    first = pairs.rows[pairs.group == 0]
    assert featurizer.words(pairs.queries[0])[0] in " ".join(featurizer.words(data.titles[first[0]]))
    x = text_rows(
        pairs.queries,
        pairs.group,
        pairs.rows,
        np.zeros((len(pairs.rows), 4), np.float32),
        title_lexicon_arrays(data.titles, featurizer),
        featurizer,
    )
    assert x.shape == (len(pairs.rows), TEXT_RELEVANCE_WIDTH)


def test_distillation_pairs_word_runs(featurizer: Featurizer) -> None:
    """A share of the generated query texts are runs of whole vocabulary words, against retrieved
    candidates like the other texts; without the share there are none."""
    data = load_training_data(None, 400, 0.1, 0)
    words = ["driftwood", "velvet", "lantern", "walnut", "outdoor", "tennis", "charger"]
    vocabulary = [f"[unused{i}]" for i in range(FIRST_WORD_ID)] + words
    neighbours = lambda t: np.tile(np.arange(10), (len(t), 1))  # noqa: E731
    none = distillation_pairs(data, featurizer, neighbours, 1200, 0, vocabulary)
    assert "word_runs_retrieved" not in none.sources
    half = distillation_pairs(data, featurizer, neighbours, 1200, 0, vocabulary, runs_share=0.5)
    runs = half.sources["word_runs_retrieved"]
    assert 0.4 <= runs / (runs + half.sources["generated_queries_retrieved"]) <= 0.6
    # The runs are the last query texts: two to four distinct vocabulary words each.
    tail = half.queries[-(runs // 8) :]
    assert all(2 <= len(q.split()) <= 4 and set(q.split()) <= set(words) for q in tail)
    assert sum(half.sources.values()) == len(half.rows)


def test_model_sizes() -> None:
    model = TextRelevanceStudent(1 << 14, 16, 32)
    assert model(torch.zeros(3, TEXT_RELEVANCE_WIDTH)).shape == (3, 3)


def test_student_outputs_the_datas_grades(featurizer: Featurizer, tmp_path: Path) -> None:
    """ESCI's four grades: the colour task with "only the colour agrees" (complement) a grade of its own."""
    x, y = _colour_task(featurizer, 3000, 3, four=True)
    model = train_text_student(x, None, y, 1 << 14, 16, 32, 8, 2.0, 0.7, True, 0, num_grades=4)
    export_onnx(model, torch.from_numpy(x[:2]), "features", "probabilities", tmp_path / "m.onnx")
    probs = run_onnx(tmp_path / "m.onnx", "relevance", "features", x)
    assert probs.shape == (len(x), 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert set(y.tolist()) == {0, 1, 2, 3} and np.mean(probs.argmax(1) == y) > 0.9
