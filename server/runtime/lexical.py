"""The lexical (BM25) index over product titles: one tokenizer for training and serving, a builder that
precomputes every posting's full BM25 weight, and an index opened memory-mapped from a bundle.

Files (prefix "lexical" by default), all written by `save` and checked by `LexicalIndex.open`:
- lexical_vocab.json: a JSON list of the terms, sorted; a term's id is its position.
- lexical_indptr.npy: int64 [terms + 1], term t's postings are [indptr[t], indptr[t + 1]).
- lexical_postings.npy: int32 [nnz], product rows, ascending within each term.
- lexical_weights.npy: float32 [nnz], idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)).
- lexical_impact.npy (optional: bundles built before it lack it): int32 [nnz], each term's postings by weight,
  highest first (ties by row), as offsets into the term's span: a one-word search of a long list reads its
  top k from the front (`_one_word_by_impact`).

Since the weights are final, a query's score is a sum of a few posting lists: no document lengths, k1 or b
at serving time. Only numpy and the standard library: the server reads it without training's stack."""

from __future__ import annotations

import json
import re
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

# Letters and digits in any script; "_" is a word character for \w but not a word for search.
_WORD = re.compile(r"[^\W_]+")
_APOSTROPHE = re.compile("['\u2019]")  # ASCII and typographic

# Plurals in -ves are too mixed for a rule ("gloves" -> "glove" but "shelves" -> "shelf"), so the f/fe ones
# that occur in product titles are listed; every other -ves word just loses its "s".
_IRREGULAR = {
    "shelves": "shelf",
    "knives": "knife",
    "leaves": "leaf",
    "halves": "half",
    "scarves": "scarf",
    "wolves": "wolf",
    "loaves": "loaf",
    "calves": "calf",
    "wives": "wife",
    "lives": "life",
}
# -es after a sibilant is part of the plural ("benches"), elsewhere the "e" belongs to the stem ("sizes").
_SIBILANT_ES = ("ches", "shes", "sses", "xes")
# Singular words ending in s: "dress", "cactus", "tennis".
_NOT_PLURAL = ("ss", "us", "is")

# Below this many products a dense accumulator costs next to nothing (a few tens of KB).
_DENSE_MAX_PRODUCTS = 1 << 16
# Above that, a query with at least num_products / _DENSE_RATIO postings still accumulates densely: one
# pass over the array then beats sorting that many postings.
_DENSE_RATIO = 8
# A one-word query with at least this many postings, in a bundle with the impact file, reads them best first
# and stops at k. At a million grown products a common title word has 1e5 to 5e5 postings.
_IMPACT_MIN_POSTINGS = 1 << 15
# A query of several words reads, of each word's postings in impact order, this many first: their rows' full
# scores give the lower bound of the k-th score that lets the search skip whole posting lists (_pruned).
_PRUNE_HEAD = 64
# The bound is lowered by this share, so that a row left out scores below it after float32 rounding too.
_PRUNE_MARGIN = 1e-5
# Postings first read, as a multiple of k; each chunk that leaves the top k short (a category filter) reads
# 4x more.
_IMPACT_FIRST_READ = 64


def stem(word: str) -> str:
    """Light plural stemming of one lowercase word; words of three letters or fewer are left alone
    ("gas", "bus") because a rule there is more often wrong than right."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(_SIBILANT_ES):
        return word[:-2]
    if word.endswith("s") and not word.endswith(_NOT_PLURAL):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    # Apostrophes are dropped first so "men's" is one word, not "men" and a stray "s".
    return _WORD.findall(_APOSTROPHE.sub("", text.lower()))


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric words, plural-stemmed, so "accent chair" matches the class "Accent Chairs"."""
    return [stem(w) for w in _words(text)]


@dataclass(frozen=True)
class LexicalArrays:
    """A built index in CSR form (see the module docstring); `num_products` counts titles without any word
    too, which no posting mentions."""

    vocab: list[str]
    indptr: np.ndarray
    postings: np.ndarray
    weights: np.ndarray
    num_products: int
    impact: np.ndarray | None = None
    """int32 [nnz]: each term's postings by weight, highest first, as offsets into its span; None when the
    bundle predates the file (every search then reads whole posting lists)."""


def impact_order(indptr: np.ndarray, postings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each term's postings by weight, highest first, ties by row: offsets into the term's span."""
    lengths = np.diff(indptr)
    terms = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    order = np.lexsort((postings, -weights.astype(np.float64), terms))
    return (order - np.repeat(indptr[:-1], lengths)).astype(np.int32)


def build_lexical_index(
    titles: Sequence[str], k1: float = 1.2, b: float = 0.75, *, dtype: Any = np.float32
) -> LexicalArrays:
    """BM25 postings of `titles` (product row = position). Weights are computed in float64 and stored as
    `dtype`: float32 for bundles, float64 for offline reports that want the textbook numbers."""
    n = len(titles)
    # Number each distinct word as it comes and keep only the numbers (4 bytes a word, where the words
    # themselves would take ~50 bytes each: half a GB at a million titles).
    word_id: dict[str, int] = {}
    flat = array("i")
    counts = array("q")
    for title in titles:
        words = _words(title)
        counts.append(len(words))
        flat.extend([word_id.setdefault(w, len(word_id)) for w in words])
    # Stem each distinct word once, then renumber words by their term's rank in the sorted vocabulary.
    stems = [stem(w) for w in word_id]
    vocab = sorted(set(stems))
    term_id = {t: i for i, t in enumerate(vocab)}
    term_of_word = np.array([term_id[s] for s in stems], dtype=np.int64)
    terms = term_of_word[np.frombuffer(flat, dtype=np.intc)] if flat else np.zeros(0, dtype=np.int64)
    lengths = np.frombuffer(counts, dtype=np.int64) if counts else np.zeros(0, dtype=np.int64)
    docs = np.repeat(np.arange(n, dtype=np.int64), lengths)
    # One key per (term, product) occurrence; np.unique sorts them by term then row and counts the tf.
    keys, tf = np.unique(terms * max(n, 1) + docs, return_counts=True)
    post_terms, post_rows = np.divmod(keys, max(n, 1))
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(post_terms, minlength=len(vocab)), out=indptr[1:])

    df = np.diff(indptr).astype(np.float64)
    # Lucene's idf: always positive, so a word in most products still counts a little.
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    avg = float(lengths.mean()) if n and lengths.mean() > 0 else 1.0
    norm = k1 * (1.0 - b + b * lengths / avg)
    tf = tf.astype(np.float64)
    weights = idf[post_terms] * tf * (k1 + 1.0) / (tf + norm[post_rows])
    postings, weights = post_rows.astype(np.int32), weights.astype(dtype)
    return LexicalArrays(vocab, indptr, postings, weights, n, impact_order(indptr, postings, weights))


def file_names(prefix: str) -> tuple[str, str, str, str]:
    """The vocabulary, indptr, postings and weights files' names, in that order."""
    return (f"{prefix}_vocab.json", f"{prefix}_indptr.npy", f"{prefix}_postings.npy", f"{prefix}_weights.npy")


def impact_name(prefix: str) -> str:
    return f"{prefix}_impact.npy"


def save(directory: str | Path, arrays: LexicalArrays, prefix: str = "lexical") -> list[str]:
    """Write the four files, and the impact order when built, into `directory`; returns their names."""
    directory = Path(directory)
    vocab_name, indptr_name, postings_name, weights_name = file_names(prefix)
    (directory / vocab_name).write_text(json.dumps(arrays.vocab, ensure_ascii=False), encoding="utf-8")
    for name, values, dtype in (
        (indptr_name, arrays.indptr, np.int64),
        (postings_name, arrays.postings, np.int32),
        (weights_name, arrays.weights, np.float32),
    ):
        np.save(directory / name, np.ascontiguousarray(values, dtype=dtype), allow_pickle=False)
    if arrays.impact is None:
        return list(file_names(prefix))
    np.save(
        directory / impact_name(prefix), np.ascontiguousarray(arrays.impact, np.int32), allow_pickle=False
    )
    return [*file_names(prefix), impact_name(prefix)]


def _load(directory: Path, name: str, dtype: type[np.generic]) -> np.ndarray:
    try:
        array = np.load(directory / name, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:  # missing, not .npy, or an object (pickled) array
        raise ValueError(f"{name}: cannot load as .npy without pickle ({e})") from e
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != 1:
        shown = f"{array.dtype} with shape {array.shape}" if isinstance(array, np.ndarray) else "not an array"
        raise ValueError(f"{name}: expected a 1-D {np.dtype(dtype)} array, found {shown}")
    return array.view(np.ndarray)  # the same mapped pages, without np.memmap's per-slice objects


class LexicalIndex:
    """BM25 top-k over a built index; normally opened memory-mapped from a bundle directory."""

    def __init__(self, arrays: LexicalArrays) -> None:
        """Wrap arrays as they are (trusted: from build_lexical_index, or checked by `open`)."""
        self._vocab = arrays.vocab
        self._indptr = arrays.indptr
        self._postings = arrays.postings
        self._weights = arrays.weights
        self._impact = arrays.impact
        self.num_products = arrays.num_products

    @classmethod
    def open(
        cls, directory: str | Path, num_products: int, prefix: str = "lexical", impact: bool = False
    ) -> LexicalIndex:
        """Open the files `save` wrote, memory-mapped; `impact` says the bundle lists the impact file.
        `num_products` is the bundle's product count (titles without words appear in no posting, so the
        files alone cannot tell it). Raises ValueError naming the file at fault. The checks read each array
        once (min, max, monotonicity, finiteness): a few ms at a million products, and what stops a bad
        file from indexing out of range at query time."""
        directory = Path(directory)
        vocab_name, indptr_name, postings_name, weights_name = file_names(prefix)
        try:
            vocab = json.loads((directory / vocab_name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{vocab_name}: cannot read as JSON ({e})") from e
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError(f"{vocab_name}: expected a JSON list of strings")
        # Lookups bisect the list, so it must be strictly sorted (which also rules out duplicates).
        if any(a >= b for a, b in pairwise(vocab)):
            raise ValueError(f"{vocab_name}: terms are not sorted and unique")

        indptr = _load(directory, indptr_name, np.int64)
        postings = _load(directory, postings_name, np.int32)
        weights = _load(directory, weights_name, np.float32)
        if len(indptr) != len(vocab) + 1:
            raise ValueError(f"{indptr_name}: {len(indptr)} offsets for {len(vocab)} terms, not terms + 1")
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError(f"{indptr_name}: offsets must start at 0 and never decrease")
        if indptr[-1] != len(postings):
            raise ValueError(f"{indptr_name}: last offset {int(indptr[-1])} != {len(postings)} postings")
        if len(weights) != len(postings):
            raise ValueError(f"{weights_name}: {len(weights)} weights for {len(postings)} postings")
        if len(postings) and (int(postings.min()) < 0 or int(postings.max()) >= num_products):
            raise ValueError(f"{postings_name}: product rows outside [0, {num_products})")
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"{weights_name}: weights must be finite and positive")
        order = _load(directory, impact_name(prefix), np.int32) if impact else None
        if order is not None:
            _check_impact(impact_name(prefix), order, indptr, weights)
        return cls(LexicalArrays(vocab, indptr, postings, weights, num_products, order))

    def __len__(self) -> int:
        """Number of products (rows), as the dense index's rows."""
        return self.num_products

    @property
    def num_terms(self) -> int:
        return len(self._vocab)

    def _span(self, term: str) -> tuple[int, int] | None:
        i = bisect_left(self._vocab, term)
        if i == len(self._vocab) or self._vocab[i] != term:
            return None
        start, end = int(self._indptr[i]), int(self._indptr[i + 1])
        return (start, end) if end > start else None

    def search(self, query: str, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows (int64) and BM25 scores (float32) of `query`, best first, ties by row ascending; only
        products with a score > 0, so an empty query or unknown words give no hits.

        Each distinct query word counts once (as training's BM25 floor): in a short search query a repeated
        word is noise rather than emphasis. `rows` restricts the search (a category filter): either a boolean
        mask of num_products, the cheap form, or an array of row numbers (turned into such a mask)."""
        none = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if k <= 0:
            return none
        spans = [s for term in dict.fromkeys(tokenize(query)) if (s := self._span(term)) is not None]
        if not spans:
            return none
        mask = self._mask(rows)
        size = sum(end - start for start, end in spans)
        if self._impact is not None and size >= _IMPACT_MIN_POSTINGS:
            if len(spans) == 1:
                found = self._one_word_by_impact(*spans[0], k, mask)
            else:
                found = self._pruned(spans, k, mask)
            if found is not None:
                return found
        dense = self.num_products <= _DENSE_MAX_PRODUCTS or size * _DENSE_RATIO >= self.num_products
        if len(spans) > 1 and dense:
            found = np.concatenate([self._postings[start:end] for start, end in spans])
            weights = np.concatenate([self._weights[start:end] for start, end in spans])
            # bincount sums in float64 in the order given (the query's terms), as the sparse path below.
            acc = np.bincount(found, weights, minlength=self.num_products).astype(np.float32)
            hits = np.flatnonzero(acc > 0)
            if mask is not None:
                hits = hits[mask[hits]]
            return _top_k(hits, acc[hits], k)

        # Sparse: only the query's postings are touched, so a search costs O(postings), not O(products).
        found = np.concatenate([self._postings[start:end] for start, end in spans]).astype(np.int64)
        scores = np.concatenate([self._weights[start:end] for start, end in spans])
        if mask is not None:
            keep = mask[found]
            found, scores = found[keep], scores[keep]
        if len(spans) > 1 and len(found):
            # Summed in the query's term order, so the sums match the dense path's to the bit.
            found, sums = _sum_by_row(found, scores)
            scores = sums.astype(np.float32)
        positive = scores > 0
        return _top_k(found[positive], scores[positive], k)

    def _one_word_by_impact(
        self, start: int, end: int, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A one-word query's top k: the first k of its postings in impact order (weight, then row: the
        answer's own order) that the mask allows, read in growing chunks; None when a small category would
        need most of the list (the caller then reads it all). Several words go to _pruned: a threshold
        algorithm over the impact orders (stop once no unread row can reach the k-th score) rarely stops
        on BM25, whose scores tie a lot (a word once in titles of one length has one weight), and a tie at
        the k-th score proves nothing; on the 1M grown catalogue it cost more than it saved."""
        assert self._impact is not None
        read = 0
        chunk = _IMPACT_FIRST_READ * k
        kept: list[np.ndarray] = []
        have = 0
        while read < end - start:
            if mask is not None and 2 * read >= end - start:
                return None
            offsets = self._impact[start + read : min(end, start + read + chunk)].astype(np.int64) + start
            read += len(offsets)
            if mask is not None:
                offsets = offsets[mask[self._postings[offsets]]]
            kept.append(offsets[: k - have])
            have += len(kept[-1])
            if have == k:
                break
            chunk *= 4
        offsets = np.concatenate(kept)
        rows = self._postings[offsets].astype(np.int64)
        # As the full read: a float64 sum of one weight, then float32.
        return rows, self._weights[offsets].astype(np.float64).astype(np.float32)

    def _pruned(
        self, spans: list[tuple[int, int]], k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Several words' top k without reading every posting list (MaxScore): a lower bound of the k-th
        score comes from the full scores of the rows at the head of each word's impact order; words whose
        best weights together stay below it cannot put a row in the top k alone, so only the other words'
        lists are read, and the rows they hold that could still reach the bound are scored in full by
        lookups in every list. The same answer as the full read, to the bit: scores are summed in float64
        in the query's word order, and a row left out scores below the bound. None when every list must
        be read (the caller then does)."""
        assert self._impact is not None
        impact, weights, postings = self._impact, self._weights, self._postings
        best = np.array([float(weights[a + impact[a]]) for a, _ in spans])
        heads = np.concatenate(
            [postings[impact[a : min(b, a + _PRUNE_HEAD)].astype(np.int64) + a] for a, b in spans]
        )
        heads = np.unique(heads).astype(np.int64)
        if mask is not None:
            heads = heads[mask[heads]]
        if len(heads) < k:
            return None
        scores = self._full_scores(spans, heads)
        bound = float(np.partition(scores, len(scores) - k)[len(scores) - k]) * (1 - _PRUNE_MARGIN)
        order = np.argsort(best, kind="stable")
        skipped = order[np.cumsum(best[order]) < bound]  # lowest best weights first
        if not len(skipped):
            return None
        read = [spans[i] for i in sorted(set(range(len(spans))) - set(skipped.tolist()))]
        rows = np.concatenate([postings[a:b] for a, b in read]).astype(np.int64)
        partial = np.concatenate([weights[a:b] for a, b in read]).astype(np.float64)
        if len(read) > 1:  # a row's weights from several lists (their order does not matter here)
            rows, partial = _sum_by_row(rows, partial)
        slack = float(best[skipped].sum())
        keep = partial + slack >= bound
        if mask is not None:
            keep &= mask[rows]
        rows, partial = rows[keep], partial[keep]
        for i in skipped[::-1]:  # the skipped words by lookup, highest best weight first
            slack -= best[i]
            partial = partial + self._weights_of(spans[i], rows)
            keep = partial + slack >= bound
            rows, partial = rows[keep], partial[keep]
        return _top_k(rows, self._full_scores(spans, rows).astype(np.float32), k)

    def _weights_of(self, span: tuple[int, int], rows: np.ndarray) -> np.ndarray:
        """float64 weight of one word in each of `rows` (0 where the row lacks it), by binary search of its
        postings (sorted by row)."""
        start, end = span
        listed = self._postings[start:end]
        # Keys in the list's own dtype (int32): int64 keys make numpy cast the whole list first, which for a
        # common word's list cost more than the search itself.
        at = np.minimum(np.searchsorted(listed, rows.astype(listed.dtype)), end - start - 1)
        return np.where(listed[at] == rows, self._weights[start + at].astype(np.float64), 0.0)

    def _full_scores(self, spans: list[tuple[int, int]], rows: np.ndarray) -> np.ndarray:
        """BM25 of `rows` (float64), their words' weights summed in the query's word order, as the full
        read sums them."""
        total = np.zeros(len(rows), dtype=np.float64)
        for span in spans:
            total += self._weights_of(span, rows)
        return total

    def _mask(self, rows: np.ndarray | None) -> np.ndarray | None:
        if rows is None:
            return None
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            if rows.shape != (self.num_products,):
                raise ValueError(f"row mask has shape {rows.shape}, expected ({self.num_products},)")
            return rows
        mask = np.zeros(self.num_products, dtype=np.bool_)
        mask[rows.astype(np.int64, copy=False)] = True
        return mask


def _sum_by_row(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Postings of several terms' lists, concatenated (each sorted by row; not empty), merged: each row
    once, ascending, with its weights summed in float64 in the order given. The stable sort merges the
    sorted runs and keeps that order within a row."""
    order = np.argsort(rows, kind="stable")
    rows, weights = rows[order], weights[order]
    starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    return rows[starts], np.add.reduceat(weights.astype(np.float64), starts)


def _check_impact(name: str, impact: np.ndarray, indptr: np.ndarray, weights: np.ndarray) -> None:
    """Every offset inside its term's span, and weights never rising along it: what a search by impact
    relies on. One pass over the arrays, as the other files' checks."""
    if len(impact) != len(weights):
        raise ValueError(f"{name}: {len(impact)} offsets for {len(weights)} postings")
    if not len(impact):
        return
    lengths = np.diff(indptr)
    starts = np.repeat(indptr[:-1], lengths)
    if int(impact.min()) < 0 or np.any(impact >= np.repeat(lengths, lengths)):
        raise ValueError(f"{name}: an offset falls outside its term's postings")
    ordered = weights[starts + impact]
    rises = np.diff(ordered) > 0
    starts_of_terms = indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(weights))]
    rises[starts_of_terms - 1] = False  # a new term may start higher than the last one ended
    if np.any(rises):
        raise ValueError(f"{name}: weights rise along a term's impact order")


def _top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of `rows` (ascending) by score (>= 0), best first, ties by row ascending.

    BM25 ties a lot (same words, same title length), and np.partition degrades badly on repeated values
    (5 ms for 65k near-equal floats), so the partition runs on distinct keys: a non-negative float32's bits
    order like its value, so (bits << 32) | (2**32 - 1 - position) sorts by score, then lower row first."""
    picked = np.arange(len(scores))
    if len(scores) > 64 * k:
        # A common word's query has ~1e5 hits: cut them down first. The k-th largest of the maxima of
        # >= k chunks is a lower bound of the k-th largest score (k distinct scores reach it).
        step = len(scores) // (16 * k)
        maxima = np.maximum.reduceat(scores, np.arange(0, len(scores), step))
        bound = np.partition(maxima, len(maxima) - k)[len(maxima) - k]
        picked = np.flatnonzero(scores >= bound)
    bits = np.ascontiguousarray(scores[picked], dtype=np.float32).view(np.uint32).astype(np.uint64)
    keys = (bits << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - picked.astype(np.uint64))
    if len(keys) > k:
        top = np.argpartition(keys, len(keys) - k)[len(keys) - k :]
        picked, keys = picked[top], keys[top]
    picked = picked[np.argsort(keys)[::-1]]
    return rows[picked].astype(np.int64, copy=False), scores[picked].astype(np.float32, copy=False)
