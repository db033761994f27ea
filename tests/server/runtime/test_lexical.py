"""The lexical index: BM25 weights against a direct formula, top-k order and ties, category restriction,
the save/open round trip, files refused with the file named, and a 200k-title build."""

from __future__ import annotations

import json
import math
import mmap
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from server.runtime import lexical
from server.runtime.lexical import LexicalIndex, build_lexical_index, save, tokenize

TOY = ["Red oak desk", "oak desks, desk lamp", "red lamp", "blue rug"]


def _direct(docs: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 straight from the formula, one document at a time; each distinct query word once."""
    toks = [tokenize(d) for d in docs]
    avg = sum(len(t) for t in toks) / len(toks)
    out = np.zeros(len(docs))
    for i, t in enumerate(toks):
        tf = Counter(t)
        for term in set(tokenize(query)):
            if tf[term]:
                df = sum(term in other for other in toks)
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                out[i] += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(t) / avg))
    return out


def _expected(docs: list[str], query: str, k: int, rows: np.ndarray | None = None) -> list[int]:
    scores = _direct(docs, query).astype(np.float32)
    hits = [i for i in range(len(docs)) if scores[i] > 0 and (rows is None or i in set(rows.tolist()))]
    return sorted(hits, key=lambda i: (-scores[i], i))[:k]


def test_one_tokenizer_for_training_and_serving() -> None:
    from training import bm25

    assert bm25.tokenize is tokenize and bm25.stem is lexical.stem
    assert tokenize("Men's Oak DESKS, 2-pack") == ["men", "oak", "desk", "2", "pack"]


def test_csr_layout_and_a_weight_by_hand() -> None:
    a = build_lexical_index(TOY)
    assert a.vocab == ["blue", "desk", "lamp", "oak", "red", "rug"]
    assert a.num_products == 4
    assert (a.indptr.dtype, a.postings.dtype, a.weights.dtype) == (np.int64, np.int32, np.float32)
    np.testing.assert_array_equal(a.indptr, [0, 1, 3, 5, 7, 9, 10])
    np.testing.assert_array_equal(a.postings, [3, 0, 1, 1, 2, 0, 1, 0, 2, 3])
    # "desk" in doc 1: tf 2, length 4 against an average of (3 + 4 + 2 + 2) / 4, df 2 of N = 4.
    idf = math.log(1 + (4 - 2 + 0.5) / (2 + 0.5))
    by_hand = idf * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 4 / (11 / 4)))
    assert a.weights[2] == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("query", ["desk", "red lamp", "oak desk lamp", "blue rug red", "RUGS"])
def test_scores_match_the_formula(query: str) -> None:
    index = LexicalIndex(build_lexical_index(TOY))
    rows, scores = index.search(query, 10)
    direct = _direct(TOY, query)
    assert rows.tolist() == _expected(TOY, query, 10)
    np.testing.assert_allclose(scores, direct[rows], rtol=1e-6)
    assert rows.dtype == np.int64 and scores.dtype == np.float32


def test_k1_and_b_reach_the_weights() -> None:
    docs = ["chair", "chair with a very long descriptive title", "table"]
    flat = build_lexical_index(docs, k1=2.0, b=0.0)
    # b = 0: no length normalisation, so both chairs weigh the same.
    assert flat.weights[flat.vocab.index("chair")] == flat.weights[flat.vocab.index("chair") + 1]
    normal = LexicalIndex(build_lexical_index(docs))
    assert normal.search("chair", 5)[0].tolist() == [0, 1]  # the shorter title wins


def test_no_hits_for_empty_or_unknown_queries() -> None:
    index = LexicalIndex(build_lexical_index(TOY))
    for query in ["", "   ", "?!", "durian", "green sofa"]:
        rows, scores = index.search(query, 5)
        assert len(rows) == len(scores) == 0
    assert len(index.search("desk", 0)[0]) == 0


def test_ties_by_row_and_k_clamped() -> None:
    index = LexicalIndex(build_lexical_index(["sofa", "lamp", "sofa", "sofa", "sofa bed"]))
    assert index.search("sofa", 2)[0].tolist() == [0, 2]
    assert index.search("sofa", 10)[0].tolist() == [0, 2, 3, 4]  # only products that score
    many = LexicalIndex(build_lexical_index(["rug"] * 1000))
    assert many.search("rug", 5)[0].tolist() == [0, 1, 2, 3, 4]


def test_a_repeated_query_word_counts_once() -> None:
    index = LexicalIndex(build_lexical_index(TOY))
    rows, scores = index.search("lamp lamps LAMP", 5)
    once_rows, once_scores = index.search("lamp", 5)
    np.testing.assert_array_equal(rows, once_rows)
    np.testing.assert_array_equal(scores, once_scores)


def test_category_restriction_by_mask_or_rows() -> None:
    index = LexicalIndex(build_lexical_index(TOY))
    mask = np.array([False, True, True, True])
    by_mask = index.search("red oak lamp", 5, rows=mask)
    by_rows = index.search("red oak lamp", 5, rows=np.array([3, 1, 2]))
    assert by_mask[0].tolist() == _expected(TOY, "red oak lamp", 5, np.array([1, 2, 3])) == [2, 1]
    np.testing.assert_array_equal(by_mask[0], by_rows[0])
    np.testing.assert_array_equal(by_mask[1], by_rows[1])
    assert len(index.search("blue", 5, rows=np.array([0, 1]))[0]) == 0
    assert len(index.search("desk", 5, rows=np.zeros(0, dtype=np.int64))[0]) == 0
    with pytest.raises(ValueError, match="mask"):
        index.search("desk", 5, rows=np.ones(3, dtype=bool))


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_dense_and_sparse_accumulation_agree_with_the_formula(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "dense":
        monkeypatch.setattr(lexical, "_DENSE_RATIO", 10**9)
    else:
        monkeypatch.setattr(lexical, "_DENSE_MAX_PRODUCTS", 0)
        monkeypatch.setattr(lexical, "_DENSE_RATIO", 0)
    rng = np.random.default_rng(1)
    vocab = ["oak", "desk", "desks", "lamp", "black", "white", "chair", "bench", "benches", "rug", "x1"]
    docs = [" ".join(rng.choice(vocab, rng.integers(0, 7))) for _ in range(300)]
    index = LexicalIndex(build_lexical_index(docs))
    subset = np.sort(rng.choice(300, 90, replace=False))
    for query in ["oak desk", "black lamps white", "bench rug chair oak", "x1 zebra"]:
        for rows in (None, subset):
            got, scores = index.search(query, 25, rows=rows)
            assert got.tolist() == _expected(docs, query, 25, rows)
            np.testing.assert_allclose(scores, _direct(docs, query)[got], rtol=1e-5)


@pytest.mark.parametrize("largest", [60, 20_000])  # the second goes through the chunk-maxima cut
def test_top_k_breaks_ties_by_row(largest: int) -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(1, largest))
        rows = np.sort(rng.choice(10 * largest, n, replace=False))
        scores = rng.integers(0, int(rng.integers(2, 50)), n).astype(np.float32)  # plenty of ties
        k = int(rng.integers(1, 70))
        want = np.lexsort((rows, -scores))[:k]
        got_rows, got_scores = lexical._top_k(rows, scores, k)
        np.testing.assert_array_equal(got_rows, rows[want])
        np.testing.assert_array_equal(got_scores, scores[want])


def _mapped(array: object) -> bool:
    """Whether an array's memory is a file mapping (a plain ndarray view of a np.memmap counts)."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_save_and_open_round_trip(tmp_path: Path) -> None:
    docs = [*TOY, "", "Oak Benches"]  # a title without words still counts as a product
    built = build_lexical_index(docs)
    names = save(tmp_path, built)
    assert names == [
        "lexical_vocab.json",
        "lexical_indptr.npy",
        "lexical_postings.npy",
        "lexical_weights.npy",
        "lexical_impact.npy",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert json.loads((tmp_path / "lexical_vocab.json").read_text()) == built.vocab
    opened = LexicalIndex.open(tmp_path, len(docs))
    assert len(opened) == opened.num_products == 6 and opened.num_terms == len(built.vocab)
    assert _mapped(opened._postings)  # mapped, not copied into the heap
    fresh = LexicalIndex(built)
    for query in ["oak", "red lamp desk", "bench"]:
        for a, b in zip(opened.search(query, 4), fresh.search(query, 4), strict=True):
            np.testing.assert_array_equal(a, b)


def test_custom_prefix_and_an_empty_catalogue(tmp_path: Path) -> None:
    assert save(tmp_path, build_lexical_index([]), prefix="empty")[0] == "empty_vocab.json"
    empty = LexicalIndex.open(tmp_path, 0, prefix="empty")
    assert len(empty) == 0 and len(empty.search("anything", 3)[0]) == 0
    save(tmp_path, build_lexical_index(["", "?"]), prefix="wordless")
    assert len(LexicalIndex.open(tmp_path, 2, prefix="wordless").search("x", 3)[0]) == 0


def _corrupt(tmp_path: Path, name: str, value: object) -> None:
    save(tmp_path, build_lexical_index(TOY))
    if name.endswith(".json"):
        (tmp_path / name).write_text(json.dumps(value))
    else:
        assert isinstance(value, np.ndarray)
        np.save(tmp_path / name, value, allow_pickle=value.dtype == object)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("lexical_weights.npy", np.ones(10, dtype=np.float64), "1-D float32 array, found float64"),
        ("lexical_postings.npy", np.zeros((5, 2), dtype=np.int32), "1-D int32 array"),
        (
            "lexical_postings.npy",
            np.array([3, 0, 1, 1, 2, 0, 1, 0, 2, 4], dtype=np.int32),
            r"outside \[0, 4\)",
        ),
        ("lexical_postings.npy", np.array([3, 0, 1, 1, 2, 0, 1, 0, 2, -1], dtype=np.int32), "outside"),
        ("lexical_weights.npy", np.array([None] * 10, dtype=object), "without pickle"),
        ("lexical_weights.npy", np.full(10, np.nan, dtype=np.float32), "finite and positive"),
        ("lexical_weights.npy", np.ones(9, dtype=np.float32), "9 weights for 10 postings"),
        ("lexical_indptr.npy", np.array([0, 1, 3, 2, 7, 9, 10]), "never decrease"),
        ("lexical_indptr.npy", np.array([0, 1, 3, 5, 7, 9, 11]), "last offset 11"),
        ("lexical_indptr.npy", np.array([0, 1, 3, 5, 7, 10]), "6 offsets for 6 terms"),
        ("lexical_vocab.json", ["desk", "blue", "lamp", "oak", "red", "rug"], "not sorted"),
        ("lexical_vocab.json", {"blue": 0}, "list of strings"),
    ],
)
def test_corrupt_files_are_refused_by_name(tmp_path: Path, name: str, value: object, message: str) -> None:
    _corrupt(tmp_path, name, value)
    with pytest.raises(ValueError, match=rf"^{name}: .*{message}"):
        LexicalIndex.open(tmp_path, len(TOY))


def test_missing_or_unparseable_files_are_named(tmp_path: Path) -> None:
    save(tmp_path, build_lexical_index(TOY))
    (tmp_path / "lexical_indptr.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="^lexical_indptr.npy: cannot load"):
        LexicalIndex.open(tmp_path, len(TOY))
    (tmp_path / "lexical_vocab.json").unlink()
    with pytest.raises(ValueError, match="^lexical_vocab.json: cannot read"):
        LexicalIndex.open(tmp_path, len(TOY))


def test_build_and_search_200k_titles(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    words = np.array([f"w{i}" for i in range(5000)])
    lengths = rng.integers(6, 11, 200_000)
    picks = words[rng.integers(0, len(words), int(lengths.sum()))]
    titles = [" ".join(t) for t in np.split(picks, np.cumsum(lengths)[:-1])]
    save(tmp_path, build_lexical_index(titles))
    index = LexicalIndex.open(tmp_path, len(titles))
    rows, scores = index.search(titles[123], 10)
    assert rows[0] == 123 or scores[0] == pytest.approx(index.search(titles[123], 1)[1][0])
    assert len(rows) == 10 and np.all(np.diff(scores) <= 0)
    mask = np.zeros(len(titles), dtype=bool)
    mask[::7] = True
    restricted, _ = index.search("w1 w2 w3", 10, rows=mask)
    assert len(restricted) == 10 and np.all(restricted % 7 == 0)


def test_imports_nothing_heavy() -> None:
    code = (
        "import sys, server.runtime.lexical, server.runtime.fusion; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('training', 'torch', 'grpc', 'tokenizers', 'onnxruntime', 'usearch') "
        "or m.startswith(('server.service', 'server.transport'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _long_lists(n: int, seed: int) -> list[str]:
    """Titles over a small vocabulary, so that common words have posting lists long enough for a search
    by impact, with many exact ties (same words, same length)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(40)] + ["chair"] * 20)
    lengths = rng.integers(2, 7, n)
    picks = words[rng.integers(0, len(words), int(lengths.sum()))]
    return [" ".join(t) for t in np.split(picks, np.cumsum(lengths)[:-1])]


def _same_answers_as_the_full_read(
    tmp_path: Path,
    titles: list[str],
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    queries: list[str],
) -> list[object]:
    """Searches `queries` (k 1, 10 and 50, with and without a mask of 30% of the rows) over the files of
    `titles` opened with the impact file and without it (every list read in full), and checks that the
    answers are the same to the bit. Returns what LexicalIndex.<method> answered on the way (None where it
    left the search to the full read)."""
    save(tmp_path, build_lexical_index(titles))
    fast = LexicalIndex.open(tmp_path, len(titles), impact=True)
    full = LexicalIndex.open(tmp_path, len(titles))
    assert full._impact is None and fast._impact is not None
    monkeypatch.setattr(lexical, "_IMPACT_MIN_POSTINGS", 1)
    calls: list[object] = []
    original = getattr(LexicalIndex, method)
    monkeypatch.setattr(LexicalIndex, method, lambda self, *a: calls.append(r := original(self, *a)) or r)
    mask = np.random.default_rng(seed).random(len(titles)) < 0.3
    for query in queries:
        for k in (1, 10, 50):
            for rows in (None, mask):
                want, got = full.search(query, k, rows), fast.search(query, k, rows)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
    return calls


@pytest.mark.parametrize("seed", [0, 1])
def test_one_word_search_by_impact_gives_the_full_reads_answer_to_the_bit(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    titles = _long_lists(60_000, seed)
    queries = ["chair", "w5", "w33 w33", "chair w1", "w3 w7 chair", titles[7]]
    calls = _same_answers_as_the_full_read(
        tmp_path, titles, seed, monkeypatch, "_one_word_by_impact", queries
    )
    assert [c for c in calls if c is not None], (
        "no search was answered by impact: the test would not exercise it"
    )


def test_a_corrupt_impact_file_is_refused_by_name(tmp_path: Path) -> None:
    built = build_lexical_index(TOY)
    save(tmp_path, built)
    LexicalIndex.open(tmp_path, len(TOY), impact=True)  # as written: accepted
    name = "lexical_impact.npy"
    for value, message in (
        (np.zeros(len(built.weights) - 1, dtype=np.int32), "offsets for"),
        (np.full(len(built.weights), 5, dtype=np.int32), "outside its term"),
        (np.zeros(len(built.weights), dtype=np.int64), "1-D int32 array"),
    ):
        np.save(tmp_path / name, value)
        with pytest.raises(ValueError, match=rf"^{name}: .*{message}"):
            LexicalIndex.open(tmp_path, len(TOY), impact=True)
    # Ascending weights within a term (the order reversed) would let a search stop too early.
    order = built.impact.copy()
    for start, end in zip(built.indptr[:-1], built.indptr[1:], strict=True):
        if end - start > 1 and built.weights[start + order[start]] > built.weights[start + order[end - 1]]:
            order[start:end] = order[start:end][::-1]
            break
    else:
        pytest.skip("TOY has no term with two different weights")
    np.save(tmp_path / name, order)
    with pytest.raises(ValueError, match=rf"^{name}: weights rise"):
        LexicalIndex.open(tmp_path, len(TOY), impact=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_several_words_skip_lists_and_give_the_full_reads_answer_to_the_bit(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    titles = _long_lists(60_000, seed)
    titles[: len(titles) // 3] = [t + " rare" for t in titles[: len(titles) // 3]]  # best weights apart
    queries = ["chair w1", "w3 w7 chair", "rare chair", "w5 rare w9", "chair chair w2", titles[7], titles[-3]]
    calls = _same_answers_as_the_full_read(tmp_path, titles, seed, monkeypatch, "_pruned", queries)
    assert [c for c in calls if c is not None], "no search skipped a list: the test would not exercise it"
