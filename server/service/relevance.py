"""ScoreRelevance: featurizes the candidates and runs the relevance cascade (server/relevance_cascade.py):
golden pre-rules, then the relevance model, then corrective post-rules.

The rules are mined at training time and read from the bundle (server/rules.py). Products known to the
bundle were embedded offline by the big teacher; title candidates are embedded online by the query-side
student (the asymmetric two-tower of the relevance papers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
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
    Featurizer,
    QueryGrams,
    TitleLexicon,
    TitleMatches,
    bags_query_input,
    lexicon_of_words,
    match_block,
    pad_ids,
    query_grams,
    text_relevance_input,
    text_rows,
    title_id_block,
    title_matches,
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
        query_vector = _relevance_query_vector(bundle, query, deadline)
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
        # Titles given as text become a lexicon of their own (in slices) and go through the same array code.
        text_kind = bundle.relevance_kind in ("text_mlp", "text_bags")
        side = await _title_side(slices, featurizer, grams, query_words, list(titles.values()), text_kind)
        title_words = dict(zip(titles, side.words, strict=True))
        given = np.fromiter(titles, dtype=np.int64, count=len(titles))
        for key in LEXICAL_FEATURES:
            lexical[key][given] = side.lexical[key]
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
                query_vector,
                query_words,
                todo_titles,
                rows[todo],
                {k: v[todo] for k, v in lexical.items()},
                deadline,
                slices,
                self._heavy,
            )
            model_input: np.ndarray | dict[str, np.ndarray] = features.model_input
            if text_kind:
                # Which rows of the id side's and the title side's matches (and title ids) the model scores.
                at_id = np.searchsorted(by_id, todo[rows[todo] >= 0])
                at_title = np.searchsorted(given, todo[rows[todo] < 0])
                todo_held = TitleMatches(held.words[at_id], held.chars[at_id]) if held is not None else None
                titles_part = side.part(at_title)
                if bundle.relevance_kind == "text_mlp":
                    model_input = _text_input(
                        bundle, grams, rows[todo], features.model_input, todo_held, titles_part
                    )
                else:
                    model_input = await _bags_input(
                        bundle,
                        grams,
                        rows[todo],
                        features.model_input,
                        todo_held,
                        titles_part,
                        deadline,
                        self._heavy,
                    )
            offload = self._heavy.offload(len(todo), bundle.relevance)
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


def _relevance_query_vector(bundle: Bundle, query: str, deadline: float | None) -> asyncio.Future | None:
    """The query's vector from the model the bundle's relevance model was trained to read its cosine from
    (components.relevance.query_vector), as a task started now; None for the hashed encoder, whose vector
    comes with the titles'. The transformer query student runs on the model thread, so it overlaps the
    candidates' featurization (it is most of a call's fixed cost); the static word-piece model is a lookup
    and a mean, cheaper than the hand-over, so it runs on the event loop."""
    which = bundle.relevance_query_vector
    if which == "query_encoder":
        return None
    model, featurize = bundle.relevance_query_model()
    future = asyncio.ensure_future(
        model.infer(featurize([query]), deadline, offload=which == "query_student")
    )
    # Read its outcome even when the rules answer every candidate and nothing awaits it.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


async def _candidate_features(
    bundle: Bundle,
    query_vector: asyncio.Future | None,
    query_words: list[str],
    title_words: list[list[str]],
    rows: np.ndarray,
    lexical: dict[str, np.ndarray],
    deadline: float | None,
    slices: Slices,
    heavy: HeavyWork,
) -> CandidateFeatures:
    """The cascade's features of the candidates, from the query encoder and the intent model (and another
    query model's vector of the query, `query_vector`, when the bundle's relevance model was trained on its
    cosine: _relevance_query_vector). `rows` holds
    the product row of candidates given by id, -1 for titles; `title_words` the words of those given by
    title, in order."""
    by_id = rows >= 0
    by_title = ~by_id
    new_texts = [query_words, *title_words]
    ids = pad_ids(await slices.map(bundle.featurizer.ids, new_texts))
    # One encoder call embeds the query and every title candidate.
    # Only long runs go to the model thread: with candidates given by id, these are one row.
    offload = heavy.offload(len(ids), bundle.query_encoder)
    vectors = await bundle.query_encoder.infer(ids, deadline, offload=offload)
    candidate_vectors = np.empty((len(rows), bundle.embedding_dim), dtype=np.float32)
    id_at = np.flatnonzero(by_id)
    if len(id_at) and bundle.products is not None:
        stored, vectors_of = bundle.products.stored_vectors(rows[id_at], bundle.index.views)
        candidate_vectors[id_at[stored]] = vectors_of
        id_at = id_at[~stored]  # products of a category too large to keep its vectors apart
    candidate_vectors[id_at] = bundle.index.vectors(rows[id_at])
    candidate_vectors[by_title] = vectors[1:]
    # Titles keep the hashed encoder's vectors either way: a transformer run per title would cost a call's
    # budget.
    query_embedding = vectors[0] if query_vector is None else (await query_vector)[0]

    # The query's intent, and each candidate's category: known for products, predicted for titles.
    intents = await bundle.intent.infer(ids, deadline, offload=heavy.offload(len(ids), bundle.intent))
    categories = np.empty(len(rows), dtype=np.int64)
    categories[by_id] = bundle.products.categories[rows[by_id]]
    categories[by_title] = intents[1:].argmax(axis=1)
    return candidate_features(lexical, query_embedding, candidate_vectors, intents[0], categories)


@dataclass(frozen=True, slots=True)
class TitleSide:
    """Candidates given by title, featurized: their words, lexical features, which query n-grams each holds
    and (for the text students) their title id blocks, row for row in the order the call gave them."""

    words: list[list[str]]
    lexical: dict[str, np.ndarray]
    held: TitleMatches
    ids: np.ndarray | None

    def part(self, at: np.ndarray) -> TitleSide:
        """The rows `at`."""
        held = TitleMatches(self.held.words[at], self.held.chars[at])
        return TitleSide([], {}, held, self.ids[at] if self.ids is not None else None)


async def _title_side(
    slices: Slices,
    featurizer: Featurizer,
    grams: QueryGrams,
    query_words: list[str],
    titles: list[str],
    text_kind: bool,
) -> TitleSide:
    def featurize(part: Sequence[str]) -> TitleSide:
        words = featurizer.words_of(part)
        arrays = lexicon_of_words(words, featurizer)
        local = np.arange(len(words))
        held = title_matches(grams, arrays, local)
        lexical = TitleLexicon(arrays, featurizer).features(query_words, local, held)
        ids = title_id_block(arrays, local, featurizer.config.num_buckets) if text_kind else None
        return TitleSide(words, lexical, held, ids)

    if not titles:
        return featurize([])
    parts = await slices.chunks(featurize, titles)
    if len(parts) == 1:
        return parts[0]
    return TitleSide(
        [w for part in parts for w in part.words],
        {k: np.concatenate([part.lexical[k] for part in parts]) for k in LEXICAL_FEATURES},
        TitleMatches(
            np.concatenate([part.held.words for part in parts]),
            np.concatenate([part.held.chars for part in parts]),
        ),
        np.concatenate([part.ids for part in parts]) if text_kind else None,
    )


def _text_input(
    bundle: Bundle,
    grams: QueryGrams,
    rows: np.ndarray,
    features: np.ndarray,
    held: TitleMatches | None,
    titles: TitleSide,
) -> np.ndarray:
    """The text relevance student's rows (server/featurize.py text_relevance_input): the product side of
    candidates given by id from the bundle's lexicon arrays (`held`: their title_matches, in order), that
    of titles from their own side."""
    out = np.empty((len(rows), TEXT_RELEVANCE_WIDTH), dtype=np.float32)
    by_id, by_title = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
    if len(by_id):
        assert bundle.lexicon is not None
        buckets = bundle.featurizer.config.num_buckets
        out[by_id] = text_relevance_input(
            grams, bundle.lexicon.arrays, rows[by_id], features[by_id], buckets, held
        )
    if len(by_title):
        assert titles.ids is not None
        out[by_title] = text_rows(grams, features[by_title], titles.held, titles.ids)
    return out


async def _bags_input(
    bundle: Bundle,
    grams: QueryGrams,
    rows: np.ndarray,
    features: np.ndarray,
    held: TitleMatches | None,
    titles: TitleSide,
    deadline: float | None,
    heavy: HeavyWork,
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
        assert titles.ids is not None
        out[by_title, at : at + TEXT_QUERY_IDS] = match_block(grams, titles.held)
        offload = heavy.offload(len(by_title), bundle.relevance_titles)
        bags = await bundle.relevance_titles.infer(titles.ids, deadline, offload=offload)
        out[by_title, at + TEXT_QUERY_IDS :] = bags
    return {"query": bags_query_input(grams), "features": out}
