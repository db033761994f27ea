"""BM25: the lexical floor every model in the report is compared with (a query against class names, product
titles or one query's candidate list). Postings are precomputed per term, so scoring a query against
thousands of products is a handful of numpy scatter-adds."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

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


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric words, plural-stemmed, so "accent chair" matches the class "Accent Chairs".
    Apostrophes are dropped first so "men's" is one word, not "men" and a stray "s"."""
    return [stem(w) for w in _WORD.findall(_APOSTROPHE.sub("", text.lower()))]


class BM25:
    """Okapi BM25 over a fixed list of documents."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(docs)
        counts = [Counter(tokenize(d)) for d in docs]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        avg = float(lengths.mean()) if self.n and lengths.mean() > 0 else 1.0
        # Length normalisation depends only on the document, so it is folded into the postings once.
        norm = k1 * (1.0 - b + b * lengths / avg)
        docs_of: dict[str, list[int]] = {}
        tfs_of: dict[str, list[int]] = {}
        for i, c in enumerate(counts):
            for term, tf in c.items():
                docs_of.setdefault(term, []).append(i)
                tfs_of.setdefault(term, []).append(tf)
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, rows in docs_of.items():
            idx = np.array(rows, dtype=np.int64)
            tf = np.array(tfs_of[term], dtype=np.float64)
            df = len(rows)
            # Lucene's idf: always positive, so a word in most documents still counts a little.
            idf = math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
            self.postings[term] = (idx, idf * tf * (k1 + 1.0) / (tf + norm[idx]))

    def scores(self, query: str) -> np.ndarray:
        """One score per document. Each distinct query word counts once: in a short search query a repeated
        word is noise rather than emphasis."""
        out = np.zeros(self.n, dtype=np.float64)
        for term in dict.fromkeys(tokenize(query)):
            posting = self.postings.get(term)
            if posting is not None:
                idx, weight = posting
                out[idx] += weight  # a term appears once per document in its postings, so no duplicates
        return out

    def top_k(self, query: str, k: int) -> np.ndarray:
        """Indices of the k best documents, best first; a stable sort breaks ties by document index."""
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        return np.argsort(-self.scores(query), kind="stable")[:k].astype(np.int64)
