"""The stacked relevance teacher: the logistic stacker recovers a known mapping, gives distributions over any
number of grades, stacks only the bi-encoders the preset names (MiniLM alone without mpnet), and the word
share when asked (not in stacks pickled before it)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from training.presets import PRESETS
from training.relevance_stack import (
    CROSS_ENCODER,
    WORD_MATCH,
    CrossEncoderScorer,
    GradeStacker,
    StackedTeacher,
    alone_and_stacked,
    pair_cosines,
    stack_encoders,
    stack_features,
    word_match,
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("num_grades", [3, 4])
def test_stacker_recovers_a_known_mapping(num_grades: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 3)).astype(np.float32)
    true_w = rng.normal(scale=2.0, size=(3, num_grades))
    true_p = _softmax(x @ true_w)
    grades = np.array([rng.choice(num_grades, p=p) for p in true_p])
    probs = GradeStacker.fit(x, grades, num_grades).probabilities(x)
    assert probs.shape == (6000, num_grades)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs >= 0).all()
    assert np.abs(probs - true_p).mean() < 0.03
    # As good as the true mapping at picking the grade (Bayes' accuracy, up to sampling noise).
    assert np.mean(probs.argmax(1) == grades) > np.mean(true_p.argmax(1) == grades) - 0.01


def test_stacker_with_a_missing_grade_still_gives_it_some_mass() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    grades = (x[:, 0] > 0).astype(np.int64)  # grades 0 and 1 only; the data's set has 4
    probs = GradeStacker.fit(x, grades, 4).probabilities(x)
    assert probs.shape == (400, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.isfinite(probs).all() and np.mean(probs.argmax(1) == grades) > 0.95
    assert (probs[:, 2:] < 0.05).all()


def test_stack_features_take_the_cross_encoder_in_log_space() -> None:
    parts = {CROSS_ENCODER: np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]), "minilm": np.array([0.3, -0.1])}
    x = stack_features(parts, (CROSS_ENCODER, "minilm"))
    assert x.shape == (2, 4)
    assert np.allclose(x[0, :3], np.log([0.5, 0.25, 0.25])) and np.isfinite(x).all()
    assert np.allclose(x[:, 3], [0.3, -0.1])


def test_stack_encoders_follow_the_presets_teachers() -> None:
    tiny = PRESETS["tiny"]
    assert stack_encoders(tiny) == ("minilm",)
    assert stack_encoders(PRESETS["full"]) == ("minilm", "mpnet")
    with_mpnet = replace(tiny, methods=replace(tiny.methods, teachers=("minilm", "mpnet")))
    assert stack_encoders(with_mpnet) == ("minilm", "mpnet")
    assert PRESETS["tiny"].methods.relevance_teacher == "stacked"


class _BagEncoder:
    """A fake bi-encoder: normalised bag of letters; counts the texts it was asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: list[str], batch_size: int = 256, desc: str = "") -> np.ndarray:
        self.seen += texts
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for i, t in enumerate(texts):
            for c in t:
                if c.isascii() and c.isalpha():
                    out[i, ord(c.lower()) - 97] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_pair_cosines_encode_each_distinct_text_once() -> None:
    enc = _BagEncoder()
    cos = pair_cosines(enc, ["oak", "oak", "rug"], ["oak", "rug mat", "rug"])
    assert sorted(enc.seen) == ["oak", "rug", "rug mat"]
    assert np.allclose(cos[[0, 2]], 1) and 0 < cos[1] < 1


def test_stacked_teacher_without_mpnet_learns_from_the_cosine() -> None:
    """A cross-encoder that knows nothing (uniform) stacked with one bi-encoder: the grade comes from the
    cosine alone, and the subsets measured are each teacher alone and the stack."""
    rng = np.random.default_rng(0)
    words = ["oak", "rug", "lamp", "sofa", "desk", "vase", "bed", "mirror"]
    queries = [str(rng.choice(words)) for _ in range(600)]
    same = rng.random(600) < 0.5
    others = {w: [x for x in words if x != w] for w in words}
    titles = [q if s else str(rng.choice(others[q])) for q, s in zip(queries, same, strict=True)]
    grades = same.astype(np.int64) * 2  # exact or irrelevant, of three grades

    def uniform(qs: list[str], ts: list[str]) -> np.ndarray:
        return np.full((len(qs), 3), 1 / 3, dtype=np.float32)

    teacher = StackedTeacher(uniform, {"minilm": _BagEncoder()})
    assert teacher.names == (CROSS_ENCODER, "minilm")
    parts = teacher.parts(queries, titles)
    assert set(parts) == {CROSS_ENCODER, "minilm"}
    teacher.fit(parts, grades, 3)
    probs = teacher.combine(parts)
    assert probs.shape == (600, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.mean(probs.argmax(1) == grades) > 0.95
    assert np.allclose(teacher.probabilities(queries[:5], titles[:5]), probs[:5], atol=1e-6)
    assert alone_and_stacked(teacher.names) == {
        CROSS_ENCODER: (CROSS_ENCODER,),
        "minilm": ("minilm",),
        "stacked": (CROSS_ENCODER, "minilm"),
    }
    both = alone_and_stacked((CROSS_ENCODER, "minilm", "mpnet"))
    assert both["minilm+mpnet"] == ("minilm", "mpnet")
    assert both["stacked"] == (CROSS_ENCODER, "minilm", "mpnet")


def test_combine_before_fit_is_refused() -> None:
    teacher = StackedTeacher(lambda q, t: np.full((len(q), 3), 1 / 3), {})
    with pytest.raises(RuntimeError, match="before fit"):
        teacher.combine({CROSS_ENCODER: np.full((2, 3), 1 / 3)})


def test_a_pickled_teacher_keeps_its_stacker_and_drops_its_bi_encoders() -> None:
    """The stage cache pickles the relevance result: the bi-encoders go by name (they load from disk)."""
    import pickle

    teacher = StackedTeacher(CrossEncoderScorer(None), {"minilm": _BagEncoder()})
    teacher.stacker = GradeStacker(np.zeros(2), np.ones(2), np.zeros((2, 3)), np.zeros(3))
    back = pickle.loads(pickle.dumps(teacher))
    assert back.encoders == {"minilm": None} and back.names == (CROSS_ENCODER, "minilm")
    assert np.array_equal(back.stacker.weight, teacher.stacker.weight)
    assert isinstance(teacher.encoders["minilm"], _BagEncoder)  # the original keeps its encoder


def test_word_match_is_the_share_of_the_querys_stemmed_words_in_the_title() -> None:
    got = word_match(
        ["oak dining chairs", "Oak oak", "", "!!", "lamp"],
        ["Dining chair, solid oak", "oak table", "anything", "anything", "floor lamps"],
    )
    assert np.allclose(got, [1.0, 1.0, 0.0, 0.0, 1.0])
    assert np.allclose(word_match(["red velvet sofa"], ["blue velvet sofa"]), [2 / 3])


def test_a_stack_with_words_learns_from_the_word_share() -> None:
    """A cross-encoder and bi-encoder that know nothing, and grades that follow the word share: only the
    stacked word share can rank them, and an old pickle (no `words`) still has its old features."""
    import pickle

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    queries = [" ".join(rng.choice(words, 2, replace=False)) for _ in range(400)]
    titles = [q.split()[0] if rng.random() < 0.5 else str(rng.choice(words)) + " x" for q in queries]
    grades = (word_match(queries, titles) > 0).astype(np.int64) * 2

    def uniform(qs: list[str], ts: list[str]) -> np.ndarray:
        return np.full((len(qs), 3), 1 / 3, dtype=np.float32)

    teacher = StackedTeacher(uniform, {}, words=True)
    assert teacher.names == (CROSS_ENCODER, WORD_MATCH)
    parts = teacher.parts(queries, titles)
    teacher.fit(parts, grades, 3)
    assert np.mean(teacher.combine(parts).argmax(1) == grades) > 0.95
    old = StackedTeacher(CrossEncoderScorer(None), {})
    del old.__dict__["words"]  # as unpickled from a stage cache written before the field
    back = pickle.loads(pickle.dumps(old))
    assert back.names == (CROSS_ENCODER,)
    assert WORD_MATCH not in back.parts(queries[:2], titles[:2], np.full((2, 3), 1 / 3))
