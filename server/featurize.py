"""Text featurization shared by serving and training.

Training imports this module to build its student inputs, so the features a student learned from are,
by construction, the features it is served (no train/serve skew). Everything here is pure numpy plus the
`tokenizers` normalizer and pre-tokenizer read from the bundle's tokenizer.json.

A text becomes hashed n-gram ids:
- word unigrams and word bigrams (word order matters for "chair cushion" vs "cushion chair"),
- character n-grams of each word with boundary marks, which make the student robust to typos,
  plurals and partial words ("sofas", "sof", "cof table").
Ids are stable across processes and machines (crc32, never Python's salted hash()), in [1, num_buckets);
0 is the padding id.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

PAD_ID = 0


@dataclass(frozen=True, slots=True)
class FeaturizerConfig:
    """Featurization settings; stored in the bundle manifest and validated at load."""

    num_buckets: int = 1 << 17
    """Size of the hashed id space, including the padding id 0."""
    word_ngrams: int = 2
    """Longest word n-gram (1 = unigrams only)."""
    char_ngrams: tuple[int, ...] = (3,)
    """Character n-gram lengths taken inside each word, with '<' and '>' boundary marks."""
    max_features: int = 128
    """Ids kept per text; unigrams come first so truncation drops the least informative ids."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "hashed_ngrams",
            "hash": "crc32",
            **asdict(self),
            "char_ngrams": list(self.char_ngrams),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeaturizerConfig:
        if data.get("kind") != "hashed_ngrams" or data.get("hash") != "crc32":
            raise ValueError(f"unsupported featurizer kind/hash: {data.get('kind')!r}/{data.get('hash')!r}")
        cfg = cls(
            num_buckets=int(data["num_buckets"]),
            word_ngrams=int(data["word_ngrams"]),
            char_ngrams=tuple(int(n) for n in data["char_ngrams"]),
            max_features=int(data["max_features"]),
        )
        if (
            cfg.num_buckets < 2
            or cfg.word_ngrams < 1
            or cfg.max_features < 1
            or min(cfg.char_ngrams, default=1) < 1
        ):
            raise ValueError(f"featurizer settings out of range: {cfg}")
        return cfg


WORD_CACHE_SIZE = 50_000  # words whose ids are kept; a few MB
# Printable ASCII and the whitespace BERT keeps. On such text BERT's normalizer only lower-cases, and the
# alphanumeric words of its pre-tokenizer are the runs of [a-z0-9] (every other printable ASCII character is
# space or punctuation to it), so a regular expression finds the same words several times faster than the
# tokenizer's bindings, which build a tuple per token (tests/server/test_featurize.py holds them equal).
# Anything else goes through the tokenizer: accents and CJK, and control characters, which the normalizer
# drops (joining the words beside them).
_PLAIN_TEXT = re.compile(r"[\x20-\x7e\t\n\r]*")
_PLAIN_WORD = re.compile(r"[a-z0-9]+")
_SEPARATOR_WORD = "siftxtextxseparatorx"
_TEXT_SEPARATOR = f" {_SEPARATOR_WORD} "


class Featurizer:
    """Turns texts into padded hashed n-gram id matrices, and into word lists for lexical features."""

    def __init__(self, tokenizer_path: str | Path, config: FeaturizerConfig) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        if tokenizer.normalizer is None or tokenizer.pre_tokenizer is None:
            raise ValueError(f"{tokenizer_path}: tokenizer needs a normalizer and a pre-tokenizer")
        self._normalizer = tokenizer.normalizer
        self._pre_tokenizer = tokenizer.pre_tokenizer
        # BERT's normalizer works character by character and its pre-tokenizer splits at whitespace and
        # punctuation, so many texts joined by a separator word are normalized and split as each alone.
        self._joinable = (type(self._normalizer).__name__, type(self._pre_tokenizer).__name__) == (
            "BertNormalizer",
            "BertPreTokenizer",
        )
        self._plain_fast = self._joinable and self._normalizer.lowercase
        self.config = config
        self._modulus = config.num_buckets - 1
        # Per-word ids (unigram, then character n-grams) and the word's 64-bit hash (word_hash): words recur
        # across queries and titles far more than texts do, so most calls hash only their word bigrams.
        # Bounded; full means no more entries.
        self._word_ids: dict[str, tuple[int, tuple[int, ...], int]] = {}
        # Word n-grams of titles recur too (every call that scores a product's title by text hashes them
        # again): their ids, bounded as the words'.
        self._gram_ids: dict[str, int] = {}

    def words(self, text: str) -> list[str]:
        """Normalized words (lower-cased, accents stripped, punctuation dropped)."""
        if self._plain_fast and _PLAIN_TEXT.fullmatch(text):
            return _PLAIN_WORD.findall(text.lower())
        return self.tokenizer_words(text)

    def tokenizer_words(self, text: str) -> list[str]:
        """`words` through the tokenizer's normalizer and pre-tokenizer, whatever the text."""
        normalized = self._normalizer.normalize_str(text)
        return [w for w, _ in self._pre_tokenizer.pre_tokenize_str(normalized) if w.isalnum()]

    def words_of(self, texts: Sequence[str]) -> list[list[str]]:
        """`words` of each text, the same lists, in two calls into the tokenizer for all of them instead of
        two per text (a ScoreRelevance of 1,000 titles spent a third of its featurization there)."""
        if not self._joinable or len(texts) < 2:
            return [self.words(t) for t in texts]
        if self._plain_fast and all(_PLAIN_TEXT.fullmatch(t) for t in texts):
            return [_PLAIN_WORD.findall(t.lower()) for t in texts]
        normalized = self._normalizer.normalize_str(_TEXT_SEPARATOR.join(texts))
        out: list[list[str]] = [[]]
        for w, _ in self._pre_tokenizer.pre_tokenize_str(normalized):
            if w == _SEPARATOR_WORD:
                out.append([])
            elif w.isalnum():
                out[-1].append(w)
        if len(out) != len(texts):  # a text held the separator word itself: one at a time, then
            return [self.words(t) for t in texts]
        return out

    def _hash(self, gram: str) -> int:
        return zlib.crc32(gram.encode()) % self._modulus + 1

    def char_grams(self, words: list[str]) -> list[str]:
        out = []
        for w in words:
            marked = f"<{w}>"
            for n in self.config.char_ngrams:
                out.extend(f"c{marked[i : i + n]}" for i in range(len(marked) - n + 1))
        return out

    def _gram(self, gram: str) -> int:
        """The id of a word n-gram (its words joined by spaces), cached."""
        found = self._gram_ids.get(gram)
        if found is None:
            found = self._hash("w" + gram)
            if len(self._gram_ids) < WORD_CACHE_SIZE:
                self._gram_ids[gram] = found
        return found

    def word_entry(self, word: str) -> tuple[int, tuple[int, ...], int]:
        """(unigram id, character n-gram ids, word_hash) of one word, cached."""
        entry = self._word_ids.get(word)
        if entry is None:
            chars = tuple(self._hash(g) for g in self.char_grams([word]))
            entry = (self._hash(f"w{word}"), chars, word_hash(word))
            if len(self._word_ids) < WORD_CACHE_SIZE:
                self._word_ids[word] = entry
        return entry

    def ids(self, words: list[str]) -> list[int]:
        """Hashed n-gram ids of one word list: unigrams, word n-grams, then character n-grams word by
        word, truncated to max_features."""
        entries = [self.word_entry(w) for w in words]
        out = [entry[0] for entry in entries]
        for n in range(2, self.config.word_ngrams + 1):
            out.extend(self._gram(" ".join(words[i : i + n])) for i in range(len(words) - n + 1))
        for _, chars, _ in entries:
            if len(out) >= self.config.max_features:
                break
            out.extend(chars)
        return out[: self.config.max_features]

    def char_ids(self, words: list[str]) -> set[int]:
        return {i for w in words for i in self.word_entry(w)[1]}

    def word_char_ids(self, word: str) -> tuple[int, ...]:
        """The character n-gram ids of one word, in order (cached)."""
        return self.word_entry(word)[1]

    def batch_ids(self, texts: list[str]) -> np.ndarray:
        """Padded int64 matrix [len(texts), max ids in batch]; at least one column."""
        return self.ids_of_words([self.words(t) for t in texts])

    def ids_of_words(self, word_lists: list[list[str]]) -> np.ndarray:
        return pad_ids([self.ids(words) for words in word_lists])


def pad_ids(rows: list[list[int]]) -> np.ndarray:
    if len(rows) == 1 and rows[0]:  # the common serving case: one query, nothing to pad
        return np.array(rows, dtype=np.int64)
    width = max((len(r) for r in rows), default=0) or 1
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class RelevanceColumn(IntEnum):
    """The relevance model's input columns, in order; the manifest records their names. Computed here
    because training and serving must compute them identically."""

    COSINE = 0
    WORD_COVERAGE = 1
    CHAR_COVERAGE = 2
    CATEGORY_PROBABILITY = 3


RELEVANCE_FEATURES = tuple(column.name.lower() for column in RelevanceColumn)
# What lexical_features returns per candidate: known before any model runs, so the pre-rules' inputs.
LEXICAL_FEATURES = ("title_equal", "word_coverage", "char_coverage", "query_words")


def lexical_features(
    query_words: list[str], candidate_words: list[list[str]], featurizer: Featurizer
) -> dict[str, np.ndarray]:
    """Features known before any model runs (what golden pre-rules may use), float32 per candidate.

    title_equal: the query is the candidate's whole title; word_coverage: share of the query's distinct
    words found in the title; char_coverage: share of the query's distinct character n-gram ids found in
    the title (typos, plurals); query_words: number of words in the query.
    """
    n = len(candidate_words)
    equal = np.zeros(n, dtype=np.float32)
    words_cov = np.zeros(n, dtype=np.float32)
    chars_cov = np.zeros(n, dtype=np.float32)
    q_words = set(query_words)
    q_chars = featurizer.char_ids(query_words)
    for i, words in enumerate(candidate_words):
        equal[i] = words == query_words
        if q_words:
            words_cov[i] = len(q_words & set(words)) / len(q_words)
        if q_chars:
            chars_cov[i] = len(q_chars & featurizer.char_ids(words)) / len(q_chars)
    return {
        "title_equal": equal,
        "word_coverage": words_cov,
        "char_coverage": chars_cov,
        "query_words": np.full(n, len(query_words), dtype=np.float32),
    }


def relevance_features(
    lexical: dict[str, np.ndarray],
    query_vector: np.ndarray,
    candidate_vectors: np.ndarray,
    category_probability: np.ndarray,
) -> np.ndarray:
    """The relevance model's input [n_candidates, len(RELEVANCE_FEATURES)], float32: cosine of the query and
    candidate vectors (both L2-normalized), the lexical coverages, and the intent model's probability for
    the candidate's category."""
    feats = np.empty((len(candidate_vectors), len(RELEVANCE_FEATURES)), dtype=np.float32)
    feats[:, RelevanceColumn.COSINE] = candidate_vectors @ query_vector
    feats[:, RelevanceColumn.WORD_COVERAGE] = lexical["word_coverage"]
    feats[:, RelevanceColumn.CHAR_COVERAGE] = lexical["char_coverage"]
    feats[:, RelevanceColumn.CATEGORY_PROBABILITY] = category_probability
    return feats


class TitleLexicon:
    """The product side of the lexical features, computed once per catalogue: each title's distinct words
    (as 64-bit hashes) and character n-gram ids as CSR rows, and a 64-bit hash of its normalized text.
    Candidates given by product id then get their features with array operations, with no Python loop over
    candidates; the numbers equal `lexical_features` on the same titles. The arrays (`ARRAYS`) are what a
    bundle stores (server/catalogue.py), so a server opens them memory-mapped instead of building them."""

    ARRAYS = ("word_indptr", "word_ids", "char_indptr", "char_ids", "text_hash")

    def __init__(self, arrays: dict[str, np.ndarray], featurizer: Featurizer) -> None:
        self._featurizer = featurizer
        self.arrays = arrays
        """ARRAYS by name: the product side of the text relevance student's input too."""
        self._text_hash = arrays["text_hash"]

    @classmethod
    def of_titles(cls, titles: Sequence[str], featurizer: Featurizer) -> TitleLexicon:
        return cls(title_lexicon_arrays(titles, featurizer), featurizer)

    def features(
        self, query_words: list[str], rows: np.ndarray, held: TitleMatches | None = None
    ) -> dict[str, np.ndarray]:
        """`lexical_features` for the products at `rows`, from their title_matches (`held` when the caller
        has them: a ScoreRelevance finds them once for these features and the text student's input)."""
        if held is None:
            held = title_matches(query_grams(query_words, self._featurizer), self.arrays, rows)
        return {
            "title_equal": (self._text_hash[rows] == text_hash(query_words)).astype(np.float32),
            # Shares of the query's distinct words and character n-grams that each title holds.
            "word_coverage": held.words.sum(1, dtype=np.float32) / max(held.words.shape[1], 1),
            "char_coverage": held.chars.sum(1, dtype=np.float32) / max(held.chars.shape[1], 1),
            "query_words": np.full(len(rows), len(query_words), dtype=np.float32),
        }


def word_hash(word: str) -> int:
    """A stable signed 64-bit id of a word: ids need no vocabulary, so a catalogue update adds titles
    without renumbering the others."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little", signed=True)


def text_hash(words: list[str]) -> np.uint64:
    """A stable 64-bit hash of a normalized text (its words joined by spaces): equal texts, equal hashes."""
    digest = hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def title_lexicon_arrays(titles: Sequence[str], featurizer: Featurizer) -> dict[str, np.ndarray]:
    """TitleLexicon.ARRAYS of `titles`: int64 CSR of word hashes, int32 CSR of character n-gram ids (sorted
    and distinct within a row), and uint64 text hashes."""
    return lexicon_of_words(featurizer.words_of(titles), featurizer)


def lexicon_of_words(word_lists: Sequence[list[str]], featurizer: Featurizer) -> dict[str, np.ndarray]:
    """title_lexicon_arrays of titles given as their words: what ScoreRelevance builds for candidates given by
    title, so they go through the same array code as products given by id."""
    hashes = np.array([text_hash(words) for words in word_lists], dtype=np.uint64)
    return {**title_sets(word_lists, featurizer), "text_hash": hashes}


# The text-reading relevance student (manifest kind "text_mlp", training/relevance_text.py) reads one float32
# row per candidate: the four RELEVANCE_FEATURES, then fixed-width blocks of the query's n-gram ids, each
# query id's slot (where it sits in the query), whether the candidate's title holds it, and the title's
# n-gram ids. Ids are below num_buckets (at most 2^24, so float32 holds them exactly) and 0 pads. One input
# keeps the model a single-input ONNX graph that the micro-batcher can combine across calls, and every row
# carries its own query.
TEXT_QUERY_IDS = 40
"""Query n-gram ids kept: its distinct words (last word first), then their distinct character n-grams."""
TEXT_TITLE_IDS = 80
"""Title n-gram ids kept: its distinct words, then its distinct character n-grams (the lexicon's sets)."""
TEXT_BLOCKS = (
    ("query_ids", TEXT_QUERY_IDS),
    ("query_slots", TEXT_QUERY_IDS),
    ("query_match", TEXT_QUERY_IDS),
    ("title_ids", TEXT_TITLE_IDS),
)
TEXT_RELEVANCE_FEATURES = (*RELEVANCE_FEATURES, *(name for name, _ in TEXT_BLOCKS))
"""The manifest's feature_names of a text_mlp relevance model: the feature columns, then the blocks."""
TEXT_RELEVANCE_WIDTH = len(RELEVANCE_FEATURES) + sum(width for _, width in TEXT_BLOCKS)

# The same student served as two graphs (manifest kind "text_bags"): a title's n-gram ids become its embedding
# bag once, when the bundle is built (or online for a title given as text, through the relevance component's
# title_model), and the scoring graph reads the query's ids and slots once per call beside one row per
# candidate: the four features, the match block and the title's bag.
TEXT_BAGS_QUERY = ("query_ids", "query_slots")
"""The `query` input of a text_bags model, [1, 2 * TEXT_QUERY_IDS]: ids, then slots."""
TEXT_BAGS_FEATURES = (*RELEVANCE_FEATURES, "query_match", "title_bag")
"""The manifest's feature_names of a text_bags model's `features` input: the features, the match block
(TEXT_QUERY_IDS wide) and the title's bag (the title model's output width)."""


class QuerySlot(IntEnum):
    """Where a query n-gram sits: the last word is usually the product's head noun ("oak dining TABLE")."""

    PAD = 0
    LAST_WORD = 1
    PREVIOUS_WORD = 2
    OTHER_WORD = 3
    LAST_WORD_CHARS = 4
    OTHER_CHARS = 5


NUM_QUERY_SLOTS = len(QuerySlot)


@dataclass(frozen=True, slots=True)
class QueryGrams:
    """A query's side of the text relevance input, computed once per request."""

    all_words: np.ndarray
    """int64 word_hash of every distinct word, last word first."""
    all_chars: np.ndarray
    """int64 every distinct character n-gram id, the last word's first."""
    word_hashes: np.ndarray
    """The first of all_words, as many as the input's TEXT_QUERY_IDS hold."""
    char_ids: np.ndarray
    """The first of all_chars that fit after them."""
    ids: np.ndarray
    """float32 [TEXT_QUERY_IDS]: word bucket ids then character ids, 0-padded."""
    slots: np.ndarray
    """float32 [TEXT_QUERY_IDS]: each id's QuerySlot."""


@dataclass(frozen=True, slots=True)
class TitleMatches:
    """Which of a query's distinct words and character n-grams each title holds, found once per call: the
    lexical coverage features and the text student's match block both read it."""

    words: np.ndarray
    """bool [titles, len(all_words)]."""
    chars: np.ndarray
    """bool [titles, len(all_chars)]."""


def word_buckets(hashes: np.ndarray, num_buckets: int) -> np.ndarray:
    """Word hashes (word_hash, as the lexicon stores them) -> ids in [1, num_buckets)."""
    return np.mod(hashes.astype(np.int64), num_buckets - 1) + 1


def query_grams(query_words: list[str], featurizer: Featurizer) -> QueryGrams:
    distinct = list(dict.fromkeys(reversed(query_words)))  # last word first
    slots_of = [QuerySlot.LAST_WORD, QuerySlot.PREVIOUS_WORD]
    word_hashes = np.array([word_hash(w) for w in distinct], dtype=np.int64)
    word_slots = [slots_of[i] if i < 2 else QuerySlot.OTHER_WORD for i in range(len(distinct))]
    chars: dict[int, int] = {}
    for i, w in enumerate(distinct):
        for c in featurizer.word_char_ids(w):
            chars.setdefault(c, QuerySlot.LAST_WORD_CHARS if i == 0 else QuerySlot.OTHER_CHARS)
    char_ids = np.fromiter(chars, dtype=np.int64, count=len(chars))
    n_words = min(len(distinct), TEXT_QUERY_IDS)
    n_chars = min(len(chars), TEXT_QUERY_IDS - n_words)
    ids = np.zeros(TEXT_QUERY_IDS, dtype=np.float32)
    slots = np.zeros(TEXT_QUERY_IDS, dtype=np.float32)
    ids[:n_words] = word_buckets(word_hashes[:n_words], featurizer.config.num_buckets)
    slots[:n_words] = word_slots[:n_words]
    ids[n_words : n_words + n_chars] = char_ids[:n_chars]
    slots[n_words : n_words + n_chars] = list(chars.values())[:n_chars]
    return QueryGrams(word_hashes, char_ids, word_hashes[:n_words], char_ids[:n_chars], ids, slots)


def title_matches(query: QueryGrams, title: dict[str, np.ndarray], rows: np.ndarray) -> TitleMatches:
    """Which of the query's n-grams the titles at `rows` of `title` (word and character CSR arrays) hold:
    words by their 64-bit hash, characters by id; array operations over all titles at once."""
    w_ptr, w_vals, c_ptr, c_vals = (title[k] for k in ("word_indptr", "word_ids", "char_indptr", "char_ids"))
    n, nw = len(rows), len(query.all_words)
    words = np.zeros((n, nw), dtype=bool)
    if nw and n and len(w_vals):  # titles without any word (such as "{") hold none of the query's
        w_start = w_ptr[rows]
        w_len = w_ptr[rows + 1] - w_start
        cols = np.arange(max(int(w_len.max()), 1))[None, :]
        mask = cols < w_len[:, None]
        held = np.where(mask, w_vals[np.minimum(w_start[:, None] + cols, len(w_vals) - 1)], 0)
        words = ((query.all_words[None, :, None] == held[:, None, :]) & mask[:, None, :]).any(-1)
    chars = np.zeros((n, len(query.all_chars)), dtype=bool)
    if len(query.all_chars) and n and len(c_vals):
        chars = _holds(c_ptr, c_vals, rows, query.all_chars)
    return TitleMatches(words, chars)


def title_sets(word_lists: Sequence[list[str]], featurizer: Featurizer) -> dict[str, np.ndarray]:
    """The lexicon's word and character CSR arrays (TitleLexicon.ARRAYS but the text hash) of titles given
    as words: what a bundle stores per product, for candidates given by title. Each row holds its title's
    distinct word hashes (int64) and character n-gram ids (int32), ascending. Each word is looked up once
    (cached), and the rows are sorted and made distinct by array operations for all titles at once, not by
    a set and a sort per title."""
    n = len(word_lists)
    entries = [featurizer.word_entry(w) for words in word_lists for w in words]
    words_per_title = np.fromiter(map(len, word_lists), dtype=np.int64, count=n)
    hashes = np.fromiter((e[2] for e in entries), dtype=np.int64, count=len(entries))
    chars_per_word = np.fromiter((len(e[1]) for e in entries), dtype=np.int64, count=len(entries))
    chars = np.fromiter(
        chain.from_iterable(e[1] for e in entries), dtype=np.int64, count=int(chars_per_word.sum())
    )
    word_owner = np.repeat(np.arange(n, dtype=np.int64), words_per_title)
    word_indptr, word_ids = _distinct_rows(word_owner, hashes, n)
    # Character ids are below 2^31: (row << 32 | id) sorts as (row, id) in one key, one plain sort.
    char_keys = np.sort((np.repeat(word_owner, chars_per_word) << 32) | chars)
    char_keys = char_keys[_firsts(char_keys)]
    return {
        "word_indptr": word_indptr,
        "word_ids": word_ids,
        "char_indptr": _indptr(char_keys >> 32, n),
        "char_ids": (char_keys & 0xFFFFFFFF).astype(np.int32),
    }


def _distinct_rows(owner: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of `n` rows from (row, value) pairs: each row's distinct values, ascending."""
    order = np.lexsort((values, owner))
    owner, values = owner[order], values[order]
    first = _firsts(owner) | _firsts(values)
    return _indptr(owner[first], n), values[first]


def _indptr(owner: np.ndarray, n: int) -> np.ndarray:
    """CSR offsets of `n` rows from the row of each value, values in row order."""
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=indptr[1:])
    return indptr


def _firsts(ordered: np.ndarray) -> np.ndarray:
    """bool mask of the values of a sorted array that differ from the one before (the first always)."""
    out = np.ones(len(ordered), dtype=bool)
    out[1:] = ordered[1:] != ordered[:-1]
    return out


def text_relevance_input(
    query: QueryGrams,
    title: dict[str, np.ndarray],
    rows: np.ndarray,
    features: np.ndarray,
    num_buckets: int,
    held: TitleMatches | None = None,
) -> np.ndarray:
    """The text_mlp model's input [len(rows), TEXT_RELEVANCE_WIDTH] float32 for the titles at `rows` of
    `title` (word and character CSR arrays: a bundle's lexicon, or title_sets of titles given as text) and
    their RELEVANCE_FEATURES `features`; `held` is their title_matches when the caller has them already.
    Array operations over all candidates at once."""
    held = held if held is not None else title_matches(query, title, rows)
    return text_rows(query, features, held, title_id_block(title, rows, num_buckets))


def text_rows(
    query: QueryGrams, features: np.ndarray, held: TitleMatches, title_ids: np.ndarray
) -> np.ndarray:
    """text_relevance_input from its parts: the candidates' features, title_matches and title_id_block."""
    out = np.empty((len(features), TEXT_RELEVANCE_WIDTH), dtype=np.float32)
    out[:, : len(RELEVANCE_FEATURES)] = features
    at = len(RELEVANCE_FEATURES)
    out[:, at : at + TEXT_QUERY_IDS] = query.ids
    out[:, at + TEXT_QUERY_IDS : at + 2 * TEXT_QUERY_IDS] = query.slots
    out[:, at + 2 * TEXT_QUERY_IDS : at + 3 * TEXT_QUERY_IDS] = match_block(query, held)
    out[:, at + 3 * TEXT_QUERY_IDS :] = title_ids
    return out


def match_block(query: QueryGrams, held: TitleMatches) -> np.ndarray:
    """float32 [titles, TEXT_QUERY_IDS]: whether each title holds each query n-gram of the input (in
    QueryGrams.ids order: the kept words, then the kept character n-grams)."""
    out = np.zeros((len(held.words), TEXT_QUERY_IDS), dtype=np.float32)
    nw, nc = len(query.word_hashes), len(query.char_ids)
    out[:, :nw] = held.words[:, :nw]
    out[:, nw : nw + nc] = held.chars[:, :nc]
    return out


def title_id_block(title: dict[str, np.ndarray], rows: np.ndarray, num_buckets: int) -> np.ndarray:
    """float32 [len(rows), TEXT_TITLE_IDS]: each title's ids, its distinct words (as bucket ids), then as many
    of its distinct character n-grams as fit, 0-padded; `title` holds word and character CSR arrays."""
    w_ptr, w_vals, c_ptr, c_vals = (title[k] for k in ("word_indptr", "word_ids", "char_indptr", "char_ids"))
    w_start, c_start = w_ptr[rows], c_ptr[rows]
    w_len, c_len = w_ptr[rows + 1] - w_start, c_ptr[rows + 1] - c_start
    out = np.zeros((len(rows), TEXT_TITLE_IDS), dtype=np.float32)
    cols = np.arange(TEXT_TITLE_IDS)[None, :]
    n_words = np.minimum(w_len, TEXT_TITLE_IDS)[:, None]
    n_chars = np.minimum(c_len[:, None], TEXT_TITLE_IDS - n_words)
    is_word = cols < n_words
    is_char = (cols >= n_words) & (cols < n_words + n_chars)
    out[is_word] = word_buckets(w_vals[(w_start[:, None] + cols)[is_word]], num_buckets)
    out[is_char] = c_vals[(c_start[:, None] + cols - n_words)[is_char]]
    return out


def bags_query_input(query: QueryGrams) -> np.ndarray:
    """A text_bags model's `query` input: [1, 2 * TEXT_QUERY_IDS] float32, the ids then their slots."""
    return np.concatenate([query.ids, query.slots])[None, :].astype(np.float32)


def _holds(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """[len(rows), len(query)] bool: whether the CSR row rows[i] (distinct ids in ascending order, below
    2^31) holds query[j]. Keys (position << 32 | id) are ascending over the gathered rows, so one
    searchsorted answers every pair, with no Python loop over candidates."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros((len(rows), len(query)), dtype=bool)
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    gathered = values[np.arange(total) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)]
    keys = (owner << 32) | gathered.astype(np.int64)
    wanted = (np.arange(len(rows), dtype=np.int64)[:, None] << 32) | query[None, :]
    found = np.minimum(np.searchsorted(keys, wanted), total - 1)
    return keys[found] == wanted
