"""ScoreRelevance: a golden rule before the model, the relevance model, a corrective rule after it.

Products known to the bundle were embedded offline by the teacher; title candidates are embedded online by
the query-side student (the asymmetric two-tower of the relevance papers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from server import metrics
from server.bundle import GRADES
from server.featurize import relevance_features
from server.service.errors import InvalidArgument, NotFound
from server.service.intent import SOURCE_MODEL, SOURCE_RULE
from server.service.store import BundleStore
from server.service.validation import Limits, check_text

# Expected grade value per class (irrelevant, partial, exact) gives the score in [0, 1].
_GRADE_VALUES = np.array([0.0, 0.5, 1.0], dtype=np.float32)
# Corrective rule: a candidate sharing no word and no character n-gram with the query is never above this.
_NO_OVERLAP_CAP = 0.2


@dataclass(frozen=True, slots=True)
class CandidateInput:
    product_id: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    score: float
    grade: str
    source: str


@dataclass(frozen=True, slots=True)
class RelevanceResult:
    scores: list[ScoredCandidate]
    model_version: str


class RelevanceService:
    def __init__(self, store: BundleStore, limits: Limits) -> None:
        self._store = store
        self._limits = limits

    def score(self, query: str, candidates: list[CandidateInput]) -> RelevanceResult:
        bundle = self._store.bundle
        query = check_text(query, "query", self._limits.max_query_chars)
        if not candidates:
            raise InvalidArgument("candidates", "must hold at least one candidate")
        if len(candidates) > self._limits.max_candidates:
            raise InvalidArgument(
                "candidates",
                f"has {len(candidates)} entries, more than the limit of {self._limits.max_candidates}",
            )
        rows = np.full(len(candidates), -1, dtype=np.int64)
        titles: list[str] = []
        for i, cand in enumerate(candidates):
            if cand.product_id:
                row = bundle.products.row_of.get(cand.product_id)
                if row is None:
                    raise NotFound(f"candidates[{i}].product_id", f"unknown product id {cand.product_id!r}")
                rows[i] = row
                titles.append(bundle.products.titles[row])
            elif cand.title:
                titles.append(check_text(cand.title, f"candidates[{i}].title", self._limits.max_query_chars))
            else:
                raise InvalidArgument(f"candidates[{i}]", "set product_id or title")
        by_id = rows >= 0
        by_title = ~by_id

        featurizer = bundle.featurizer
        start = time.perf_counter()
        query_words = featurizer.words(query)
        title_words = [featurizer.words(t) for t in titles]
        new_texts = [query_words] + [w for w, t in zip(title_words, by_title, strict=True) if t]
        ids = featurizer.ids_of_words(new_texts)
        metrics.FEATURIZE_DURATION.labels(method="ScoreRelevance").observe(time.perf_counter() - start)

        # One encoder call embeds the query and every title candidate.
        vectors = bundle.query_encoder.run({"ids": ids})
        query_vector = vectors[0]
        candidate_vectors = np.empty((len(candidates), bundle.embedding_dim), dtype=np.float32)
        candidate_vectors[by_id] = bundle.index.vectors(rows[by_id])
        candidate_vectors[by_title] = vectors[1:]

        # The query's intent, and each candidate's category: known for products, predicted for titles.
        intents = bundle.intent.run({"ids": ids})
        categories = np.empty(len(candidates), dtype=np.int64)
        categories[by_id] = bundle.products.categories[rows[by_id]]
        categories[by_title] = intents[1:].argmax(axis=1)

        features = relevance_features(
            query_words, query_vector, title_words, candidate_vectors, intents[0][categories], featurizer
        )
        probs = bundle.relevance.run({"features": features})
        scores = probs @ _GRADE_VALUES
        grades = probs.argmax(axis=1)
        sources = np.full(len(candidates), SOURCE_MODEL, dtype=object)

        # Golden rule: the query is the candidate's full title.
        exact = np.array([words == query_words for words in title_words])
        scores[exact], grades[exact], sources[exact] = 1.0, GRADES.index("exact"), SOURCE_RULE
        # Corrective rule: no lexical overlap at all caps the score (the model must not invent a match).
        no_overlap = (features[:, 1] == 0) & (features[:, 2] == 0) & (scores > _NO_OVERLAP_CAP)
        scores[no_overlap], grades[no_overlap], sources[no_overlap] = (
            _NO_OVERLAP_CAP,
            GRADES.index("irrelevant"),
            SOURCE_RULE,
        )
        return RelevanceResult(
            [
                ScoredCandidate(float(s), GRADES[g], str(src))
                for s, g, src in zip(scores.tolist(), grades.tolist(), sources, strict=True)
            ],
            bundle.version,
        )
