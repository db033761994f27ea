from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.featurize import (
    PAD_ID,
    RELEVANCE_FEATURES,
    TEXT_QUERY_IDS,
    TEXT_RELEVANCE_WIDTH,
    TEXT_TITLE_IDS,
    Featurizer,
    FeaturizerConfig,
    QuerySlot,
    TitleLexicon,
    lexical_features,
    pad_ids,
    query_grams,
    relevance_features,
    text_relevance_input,
    title_lexicon_arrays,
    title_matches,
    title_sets,
    word_buckets,
    word_hash,
)
from training.teachers import minilm_dir


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(Path(minilm_dir()) / "tokenizer.json", FeaturizerConfig(num_buckets=1 << 12))


# Printable ASCII, the whitespace BERT keeps and the control characters it drops, accents, CJK, a fraction,
# fullwidth letters and the separator word words_of joins texts with: the fast path's edges and beyond.
_PIECE = st.sampled_from(
    [
        *map(chr, range(0x20, 0x7F)),
        *"\t\n\r\x0b\x0c\x00\x7f\x1f",
        *"éÉß中½\uff21\u00a0\u2019",
        "siftxtextxseparatorx",
        "Mid-Century",
        "12oz",
        "O'Neil",
        "A_B",
    ]
)
_TEXT = st.lists(_PIECE, max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_words_equal_the_tokenizers_on_any_text(featurizer: Featurizer, text: str) -> None:
    assert featurizer.words(text) == featurizer.tokenizer_words(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(_TEXT, min_size=2, max_size=6))
def test_words_of_equal_the_tokenizers_on_any_texts(featurizer: Featurizer, texts: list[str]) -> None:
    assert featurizer.words_of(texts) == [featurizer.tokenizer_words(t) for t in texts]


def test_words_are_normalized(featurizer: Featurizer) -> None:
    assert featurizer.words("Mid-Century  VELVET Chaise, Décor!") == [
        "mid",
        "century",
        "velvet",
        "chaise",
        "decor",
    ]
    assert featurizer.words("!!! ---") == []


def test_words_of_many_texts_equal_each_alone(featurizer: Featurizer) -> None:
    """Normalized and split in one pass, the words are each text's own: accents, case, punctuation, CJK,
    empty texts and a text that holds the separator word itself (which falls back to one at a time)."""
    texts = [
        "Mid-Century  VELVET Chaise, Décor!",
        "",
        "   ",
        "北京 sofa—set (3pc)",
        # "Fullwidth" in fullwidth letters:
        "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 2x4 shelf\tunit\n",
        "naïve café table",
    ]
    assert featurizer.words_of(texts) == [featurizer.words(t) for t in texts]
    with_separator = [*texts, "a SIFTXTEXTXSEPARATORX b"]
    assert featurizer.words_of(with_separator) == [featurizer.words(t) for t in with_separator]
    assert featurizer.words_of([]) == [] and featurizer.words_of(["One"]) == [["one"]]


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
        grams = query_grams(words, featurizer)
        held = title_matches(grams, lexicon.arrays, rows)
        # From the lexicon's own search, and from the matches a ScoreRelevance finds once per call.
        for got in (lexicon.features(words, rows), lexicon.features(words, rows, held)):
            assert got.keys() == expected.keys()
            for key in expected:
                np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=f"{query!r}: {key}")
        x = text_relevance_input(grams, lexicon.arrays, rows, np.zeros((len(rows), 4), np.float32), 1 << 12)
        assert np.array_equal(
            x, text_relevance_input(grams, lexicon.arrays, rows, np.zeros_like(x[:, :4]), 1 << 12, held)
        )
    assert lexicon.features(["oak"], np.array([], dtype=np.int64))["word_coverage"].shape == (0,)


def _blocks(row: np.ndarray) -> tuple[np.ndarray, ...]:
    at = len(RELEVANCE_FEATURES)
    q = TEXT_QUERY_IDS
    return (
        row[:at],
        row[at : at + q],
        row[at + q : at + 2 * q],
        row[at + 2 * q : at + 3 * q],
        row[at + 3 * q :],
    )


def test_text_relevance_input_blocks(featurizer: Featurizer) -> None:
    titles = ["Oak Dining Table", "Velvet Accent Chair", "Round Oak Side Table with Drawer"]
    lexicon = title_lexicon_arrays(titles, featurizer)
    grams = query_grams(featurizer.words("oak tables"), featurizer)
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = text_relevance_input(
        grams, lexicon, np.array([2, 0, 1]), feats[[2, 0, 1]], featurizer.config.num_buckets
    )
    assert x.shape == (3, TEXT_RELEVANCE_WIDTH) and x.dtype == np.float32
    f, q_ids, slots, match, t_ids = _blocks(x[1])
    assert np.array_equal(f, feats[0])
    # The last word comes first, then the others, then their character n-grams; ids are in range.
    assert slots[0] == QuerySlot.LAST_WORD and slots[1] == QuerySlot.PREVIOUS_WORD
    assert q_ids[0] == word_buckets(np.array([word_hash("tables")]), featurizer.config.num_buckets)[0]
    assert set(slots[2 : (q_ids > 0).sum()]) <= {QuerySlot.LAST_WORD_CHARS, QuerySlot.OTHER_CHARS}
    assert ((q_ids >= 0) & (q_ids < featurizer.config.num_buckets)).all()
    assert ((t_ids >= 0) & (t_ids < featurizer.config.num_buckets)).all()
    # "tables" is not a word of "oak dining table" but "oak" is; most of "tables"' trigrams are there.
    assert match[0] == 0 and match[1] == 1
    chars = featurizer.word_char_ids("tables")
    held = set(featurizer.char_ids(["oak", "dining", "table"]))
    n_words = 2
    for j in range(n_words, (q_ids > 0).sum()):
        assert match[j] == (int(q_ids[j]) in held)
    assert any(c in held for c in chars) and not all(c in held for c in chars)
    # The velvet chair shares nothing with the query; padding matches nothing.
    assert _blocks(x[2])[3].sum() == 0
    assert match[(q_ids == 0)].sum() == 0
    # The title block: its distinct words, then its character n-grams.
    assert (t_ids > 0).sum() == min(TEXT_TITLE_IDS, 3 + len(featurizer.char_ids(["oak", "dining", "table"])))


def test_text_input_of_titles_equals_the_lexicon(featurizer: Featurizer) -> None:
    """A candidate given by title gets the same row as the same product given by id."""
    titles = ["Oak Dining Table", "Mid-Century Velvet Chaise Lounge in Emerald Green, Set of 2"]
    lexicon = title_lexicon_arrays(titles, featurizer)
    sets = title_sets([featurizer.words(t) for t in titles], featurizer)
    grams = query_grams(featurizer.words("green velvet chaise"), featurizer)
    feats = np.ones((2, 4), dtype=np.float32)
    rows = np.array([1, 0])
    by_id = text_relevance_input(grams, lexicon, rows, feats, featurizer.config.num_buckets)
    by_title = text_relevance_input(grams, sets, rows, feats, featurizer.config.num_buckets)
    assert np.array_equal(by_id, by_title)
    assert _blocks(by_id[0])[3][:3].tolist() == [1, 1, 1]


def test_text_input_of_an_empty_query_and_title(featurizer: Featurizer) -> None:
    lexicon = title_lexicon_arrays(["", "oak"], featurizer)
    grams = query_grams([], featurizer)
    x = text_relevance_input(grams, lexicon, np.array([0, 1]), np.zeros((2, 4), np.float32), 1 << 12)
    assert x.shape == (2, TEXT_RELEVANCE_WIDTH) and not x[:, 4 : 4 + 3 * TEXT_QUERY_IDS].any()
    assert (_blocks(x[0])[4] == 0).all() and (_blocks(x[1])[4] > 0).sum() == 1 + 3


def test_text_input_when_no_title_has_a_word(featurizer: Featurizer) -> None:
    """Titles such as "{" leave the word and character arrays empty: nothing matches, nothing fails (a
    fuzzed ScoreRelevance of query "0" and title "{" once answered INTERNAL here)."""
    sets = title_sets([featurizer.words(t) for t in ["{", "}"]], featurizer)
    grams = query_grams(featurizer.words("0 oak"), featurizer)
    x = text_relevance_input(grams, sets, np.array([0, 1]), np.zeros((2, 4), np.float32), 1 << 12)
    assert x.shape == (2, TEXT_RELEVANCE_WIDTH)
    assert not _blocks(x[0])[3].any() and not _blocks(x[1])[3].any()  # no query n-gram is held


_WORD_LISTS = st.lists(
    st.lists(st.sampled_from(["oak", "table", "x", "é", "12oz", "sofa", "a", "中"]), max_size=8), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(_WORD_LISTS)
def test_title_sets_hold_each_titles_distinct_words_and_char_ids_ascending(
    featurizer: Featurizer, word_lists: list[list[str]]
) -> None:
    sets = title_sets(word_lists, featurizer)
    assert sets["word_ids"].dtype == np.int64 and sets["char_ids"].dtype == np.int32
    for i, words in enumerate(word_lists):
        a, b = sets["word_indptr"][i : i + 2]
        assert sets["word_ids"][a:b].tolist() == sorted({word_hash(w) for w in words})
        chars = {c for w in words for c in featurizer.word_char_ids(w)}
        a, b = sets["char_indptr"][i : i + 2]
        assert sets["char_ids"][a:b].tolist() == sorted(chars)
    assert sets["word_indptr"][-1] == len(sets["word_ids"])
    assert sets["char_indptr"][-1] == len(sets["char_ids"])
