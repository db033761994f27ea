from pathlib import Path

import numpy as np
import pytest

from server.featurize import (
    PAD_ID,
    Featurizer,
    FeaturizerConfig,
    TitleLexicon,
    lexical_features,
    pad_ids,
    relevance_features,
)
from training.teachers import minilm_dir


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(Path(minilm_dir()) / "tokenizer.json", FeaturizerConfig(num_buckets=1 << 12))


def test_words_are_normalized(featurizer: Featurizer) -> None:
    assert featurizer.words("Mid-Century  VELVET Chaise, Décor!") == [
        "mid",
        "century",
        "velvet",
        "chaise",
        "decor",
    ]
    assert featurizer.words("!!! ---") == []


def test_ids_are_stable_in_range_and_ordered(featurizer: Featurizer) -> None:
    ids = featurizer.ids(["oak", "table"])
    assert ids == featurizer.ids(["oak", "table"])
    assert all(1 <= i < featurizer.config.num_buckets for i in ids)
    # unigrams first, then the bigram, then character trigrams: "<oak>" has 3, "<table>" has 5
    assert len(ids) == 2 + 1 + 3 + 5
    assert ids[:2] == [featurizer.ids(["oak"])[0], featurizer.ids(["table"])[0]]
    assert featurizer.ids(["table", "oak"])[2] != ids[2]  # word order changes the bigram


def test_truncation_keeps_unigrams(featurizer: Featurizer) -> None:
    small = Featurizer(
        Path(minilm_dir()) / "tokenizer.json", FeaturizerConfig(num_buckets=1 << 12, max_features=3)
    )
    assert small.ids(["a", "b", "c", "d"]) == featurizer.ids(["a", "b", "c", "d"])[:3]


def test_batch_is_padded_with_zero(featurizer: Featurizer) -> None:
    batch = featurizer.batch_ids(["oak table", "oak dining table with bench", "???"])
    assert batch.dtype == np.int64 and batch.shape[0] == 3
    assert (batch[2] == PAD_ID).all()
    assert (batch[0] > 0).sum() < (batch[1] > 0).sum() == batch.shape[1]
    assert pad_ids([]).shape == (0, 1)


def test_config_round_trip_and_rejects_unknown_kind() -> None:
    cfg = FeaturizerConfig(num_buckets=99, word_ngrams=3, char_ngrams=(3, 4), max_features=7)
    assert FeaturizerConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unsupported featurizer"):
        FeaturizerConfig.from_json({**cfg.to_json(), "hash": "md5"})
    with pytest.raises(ValueError, match="out of range"):
        FeaturizerConfig.from_json({**cfg.to_json(), "num_buckets": 1})


def test_relevance_features(featurizer: Featurizer) -> None:
    q = featurizer.words("oak table")
    titles = [
        featurizer.words("Oak Coffee Table"),
        featurizer.words("Velvet Sofa"),
        featurizer.words("Oak Tables"),
        featurizer.words("oak table"),
    ]
    lexical = lexical_features(q, titles, featurizer)
    np.testing.assert_allclose(lexical["title_equal"], [0, 0, 0, 1])
    np.testing.assert_allclose(lexical["query_words"], [2, 2, 2, 2])
    vectors = np.eye(4, dtype=np.float32)
    feats = relevance_features(lexical, vectors[0], vectors, np.array([0.9, 0.1, 0.5, 0.9]))
    assert feats.shape == (4, 4)
    np.testing.assert_allclose(feats[:, 0], [1, 0, 0, 0])
    np.testing.assert_allclose(feats[:, 1], [1, 0, 0.5, 1])  # "tables" is not the word "table"
    assert feats[2, 2] > 0.5 > feats[1, 2]  # but it shares most character trigrams
    np.testing.assert_allclose(feats[:, 3], [0.9, 0.1, 0.5, 0.9])


def test_title_lexicon_equals_lexical_features(featurizer: Featurizer) -> None:
    """The precomputed product side gives the same numbers as featurizing the titles per call."""
    titles = [
        "Oak Coffee Table",
        "Velvet Accent Chair, Navy",
        "oak coffee table",
        "",
        "Brass Floor Lamp with Shade",
        "Chairs chair CHAIR",
    ]
    lexicon = TitleLexicon.of_titles(titles, featurizer)
    rows = np.array([4, 0, 1, 3, 0, 5, 2], dtype=np.int64)
    for query in ("oak coffee table", "chair", "brass lamps shade", "zzz unknown", "Navy velvet chairs"):
        words = featurizer.words(query)
        expected = lexical_features(words, [featurizer.words(titles[r]) for r in rows], featurizer)
        got = lexicon.features(words, rows)
        assert got.keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=f"{query!r}: {key}")
    assert lexicon.features(["oak"], np.array([], dtype=np.int64))["word_coverage"].shape == (0,)
