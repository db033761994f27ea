"""BM25: the lexical floor every model in the report is compared with (a query against class names, product
titles or one query's candidate list). Tokenizing and the postings are the server's lexical index
(server/runtime/lexical.py), built with float64 weights so the report's numbers are the textbook ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.runtime.lexical import build_lexical_index, stem, tokenize

__all__ = ["BM25", "stem", "tokenize"]


class BM25:
    """Okapi BM25 over a fixed list of documents."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(docs)
        self._arrays = build_lexical_index(docs, k1, b, dtype=np.float64)
        self._term_id = {t: i for i, t in enumerate(self._arrays.vocab)}

    def scores(self, query: str) -> np.ndarray:
        """One score per document. Each distinct query word counts once: in a short search query a repeated
        word is noise rather than emphasis."""
        a = self._arrays
        out = np.zeros(self.n, dtype=np.float64)
        for term in dict.fromkeys(tokenize(query)):
            t = self._term_id.get(term)
            if t is not None:
                start, end = a.indptr[t], a.indptr[t + 1]
                out[a.postings[start:end]] += a.weights[start:end]  # a term lists a document at most once
        return out

    def top_k(self, query: str, k: int) -> np.ndarray:
        """Indices of the k best documents, best first; a stable sort breaks ties by document index."""
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        return np.argsort(-self.scores(query), kind="stable")[:k].astype(np.int64)
