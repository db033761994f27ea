"""ScoreRelevance: featurizes the candidates and runs the relevance cascade (server/relevance_cascade.py):
golden pre-rules, then the relevance model, then corrective post-rules.

The rules are mined at training time and read from the bundle (server/rules.py). Products known to the
bundle were embedded offline by the big teacher; title candidates are embedded online by the query-side
student (the asymmetric two-tower of the relevance papers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from server import metrics, timing
from server.bundle import Bundle
from server.errors import InvalidArgument, NotFound
from server.featurize import (
    LEXICAL_FEATURES,
    RELEVANCE_FEATURES,
    TEXT_QUERY_IDS,
    TEXT_RELEVANCE_WIDTH,
    QueryGrams,
    TitleMatches,
    bags_query_input,
    lexical_features,
    match_block,
    pad_ids,
    query_grams,
    text_relevance_input,
    title_id_block,
    title_matches,
    title_sets,
)
from server.relevance_cascade import (
    CandidateFeatures,
    candidate_features,
    combine,
    model_verdicts,
    pre_rules,
)
from server.service.heavy import HeavyWork, Slices
from server.service.intent import SOURCE_MODEL, SOURCE_RULE
from server.service.store import BundleStore
from server.service.validation import Limits, check_id, check_text, shown


@dataclass(frozen=True, slots=True)
class CandidateInput:
    product_id: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    score: float
    grade: str
    source: str
    rule: str = ""


@dataclass(frozen=True, slots=True)
class RelevanceResult:
    scores: list[ScoredCandidate]
    model_version: str


class RelevanceService:
    def __init__(self, store: BundleStore, limits: Limits, heavy: HeavyWork | None = None) -> None:
        self._store = store
        self._limits = limits
        self._heavy = heavy or HeavyWork()

    async def score(
        self, query: str, candidates: list[CandidateInput], deadline: float | None = None
    ) -> RelevanceResult:
        bundle = self._store.bundle
        bundle.require("relevance")
        query = check_text(query, "query", self._limits.max_query_chars)
        if not candidates:
            raise InvalidArgument("candidates", "must hold at least one candidate")
        if len(candidates) > self._limits.max_candidates:
            raise InvalidArgument(
                "candidates",
                f"has {len(candidates)} entries, more than the limit of {self._limits.max_candidates}",
            )
        given_ids: list[int] = []  # indices of candidates given by product id
        titles: dict[int, str] = {}  # candidate index -> title, for candidates given by text
        for i, cand in enumerate(candidates):
            if cand.product_id:
                check_id(cand.product_id, f"candidates[{i}].product_id")
                given_ids.append(i)
            elif cand.title:
                titles[i] = check_text(cand.title, f"candidates[{i}].title", self._limits.max_query_chars)
            else:
                raise InvalidArgument(f"candidates[{i}]", "set product_id or title")
        rows = np.full(len(candidates), -1, dtype=np.int64)
        if given_ids:
            ids = [candidates[i].product_id for i in given_ids]
            found = bundle.products.row_of.rows(ids) if bundle.products else np.full(len(ids), -1)
            if (found < 0).any():
                first = int(np.argmax(found < 0))
                raise NotFound(
                    f"candidates[{given_ids[first]}].product_id", f"unknown product id {shown(ids[first])}"
                )
            rows[given_ids] = found
        featurizer = bundle.featurizer
        # Many candidates are featurized in slices with the event loop yielded between them (cheap calls
        # run in the gaps), and their model runs go to a worker thread: server/service/heavy.py.
        slices = Slices(self._heavy.slice_rows)
        start = time.perf_counter()
        query_words = featurizer.words(query)
        # Products given by id read their precomputed side of the features; only titles are featurized.
        # Which query n-grams their titles hold is found once, for the coverage features here and the text
        # student's input below.
        by_id = np.flatnonzero(rows >= 0)
        lexical = _empty_lexical(len(candidates))
        grams = query_grams(query_words, featurizer)
        held: TitleMatches | None = None
        if len(by_id):
            assert bundle.lexicon is not None
            held = title_matches(grams, bundle.lexicon.arrays, rows[by_id])
            for key, values in bundle.lexicon.features(query_words, rows[by_id], held).items():
                lexical[key][by_id] = values
        words = await slices.map(featurizer.words, list(titles.values()))
        title_words = dict(zip(titles, words, strict=True))
        if title_words:
            given = np.fromiter(title_words, dtype=np.int64)
            parts = await slices.chunks(
                lambda part: lexical_features(query_words, list(part), featurizer), words
            )
            for key in LEXICAL_FEATURES:
                lexical[key][given] = np.concatenate([part[key] for part in parts])
        took = time.perf_counter() - start - slices.waited
        metrics.FEATURIZE_DURATION.labels(method="ScoreRelevance").observe(took)
        timing.add("featurize", took)

        # Golden pre-rules answer first; the models only see what they leave open.
        rules = bundle.rules
        pre_grades, pre_fired = pre_rules(rules, lexical)
        todo = np.flatnonzero(pre_grades < 0)
        model = None
        if len(todo):
            todo_titles = [title_words[i] for i in todo.tolist() if i in title_words]
            features = await _candidate_features(
                bundle,
                query_words,
                todo_titles,
                rows[todo],
                {k: v[todo] for k, v in lexical.items()},
                deadline,
                slices,
                self._heavy,
            )
            model_input: np.ndarray | dict[str, np.ndarray] = features.model_input
            offload = self._heavy.offload(len(todo))
            if bundle.relevance_kind in ("text_mlp", "text_bags"):
                todo_held = None
                if held is not None:  # the rows of `held` (candidates by id) that the model scores
                    at = np.searchsorted(by_id, todo[rows[todo] >= 0])
                    todo_held = TitleMatches(held.words[at], held.chars[at])
                if bundle.relevance_kind == "text_mlp":
                    model_input = _text_input(
                        bundle, grams, todo_titles, rows[todo], features.model_input, todo_held
                    )
                else:
                    model_input = await _bags_input(
                        bundle,
                        grams,
                        todo_titles,
                        rows[todo],
                        features.model_input,
                        todo_held,
                        deadline,
                        offload,
                    )
            probs = await bundle.relevance.infer(model_input, deadline, offload=offload)
            model = model_verdicts(rules, features, probs)
        verdicts = combine(rules, pre_grades, pre_fired, todo, model)
        return RelevanceResult(
            [
                ScoredCandidate(float(s), rules.grades[g], SOURCE_RULE if name else SOURCE_MODEL, name)
                for s, g, name in zip(
                    verdicts.scores.tolist(),
                    verdicts.grades.tolist(),
                    verdicts.rule_names(rules),
                    strict=True,
                )
            ],
            bundle.version,
        )


def _empty_lexical(n: int) -> dict[str, np.ndarray]:
    return {key: np.zeros(n, dtype=np.float32) for key in LEXICAL_FEATURES}


async def _candidate_features(
    bundle: Bundle,
    query_words: list[str],
    title_words: list[list[str]],
    rows: np.ndarray,
    lexical: dict[str, np.ndarray],
    deadline: float | None,
    slices: Slices,
    heavy: HeavyWork,
) -> CandidateFeatures:
    """The cascade's features of the candidates, from the query encoder and the intent model. `rows` holds
    the product row of candidates given by id, -1 for titles; `title_words` the words of those given by
    title, in order."""
    by_id = rows >= 0
    by_title = ~by_id
    new_texts = [query_words, *title_words]
    ids = pad_ids(await slices.map(bundle.featurizer.ids, new_texts))
    # One encoder call embeds the query and every title candidate.
    # Only runs of many rows go to the model thread: with candidates given by id, these are one row.
    offload = heavy.offload(len(ids))
    vectors = await bundle.query_encoder.infer(ids, deadline, offload=offload)
    candidate_vectors = np.empty((len(rows), bundle.embedding_dim), dtype=np.float32)
    id_at = np.flatnonzero(by_id)
    if len(id_at) and bundle.products is not None:
        stored, vectors_of = bundle.products.stored_vectors(rows[id_at], bundle.index.views)
        candidate_vectors[id_at[stored]] = vectors_of
        id_at = id_at[~stored]  # products of a category too large to keep its vectors apart
    candidate_vectors[id_at] = bundle.index.vectors(rows[id_at])
    candidate_vectors[by_title] = vectors[1:]

    # The query's intent, and each candidate's category: known for products, predicted for titles.
    intents = await bundle.intent.infer(ids, deadline, offload=offload)
    categories = np.empty(len(rows), dtype=np.int64)
    categories[by_id] = bundle.products.categories[rows[by_id]]
    categories[by_title] = intents[1:].argmax(axis=1)
    return candidate_features(lexical, vectors[0], candidate_vectors, intents[0], categories)


def _text_input(
    bundle: Bundle,
    grams: QueryGrams,
    title_words: list[list[str]],
    rows: np.ndarray,
    features: np.ndarray,
    held: TitleMatches | None,
) -> np.ndarray:
    """The text relevance student's rows (server/featurize.py text_relevance_input): the product side of
    candidates given by id from the bundle's lexicon arrays (`held`: their title_matches, in order), that
    of titles from their words."""
    featurizer = bundle.featurizer
    buckets = featurizer.config.num_buckets
    out = np.empty((len(rows), TEXT_RELEVANCE_WIDTH), dtype=np.float32)
    by_id, by_title = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
    if len(by_id):
        assert bundle.lexicon is not None
        out[by_id] = text_relevance_input(
            grams, bundle.lexicon.arrays, rows[by_id], features[by_id], buckets, held
        )
    if len(by_title):
        sets = title_sets(title_words, featurizer)
        out[by_title] = text_relevance_input(
            grams, sets, np.arange(len(by_title)), features[by_title], buckets
        )
    return out


async def _bags_input(
    bundle: Bundle,
    grams: QueryGrams,
    title_words: list[list[str]],
    rows: np.ndarray,
    features: np.ndarray,
    held: TitleMatches | None,
    deadline: float | None,
    offload: bool,
) -> dict[str, np.ndarray]:
    """A text_bags model's inputs: the query once, and per candidate its features, match block and title
    bag: precomputed for products given by id, embedded by the title model for titles given as text."""
    assert bundle.title_bags is not None and bundle.relevance_titles is not None
    at = len(RELEVANCE_FEATURES)
    out = np.empty((len(rows), bundle.relevance_width), dtype=np.float32)
    out[:, :at] = features
    by_id, by_title = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
    if len(by_id):
        assert held is not None
        out[by_id, at : at + TEXT_QUERY_IDS] = match_block(grams, held)
        out[by_id, at + TEXT_QUERY_IDS :] = bundle.title_bags[rows[by_id]]
    if len(by_title):
        sets = title_sets(title_words, bundle.featurizer)
        local = np.arange(len(by_title))
        out[by_title, at : at + TEXT_QUERY_IDS] = match_block(grams, title_matches(grams, sets, local))
        ids = title_id_block(sets, local, bundle.featurizer.config.num_buckets)
        out[by_title, at + TEXT_QUERY_IDS :] = await bundle.relevance_titles.infer(
            ids, deadline, offload=offload
        )
    return {"query": bags_query_input(grams), "features": out}
