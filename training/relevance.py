"""Relevance: graded query-product pairs, a cross-encoder teacher, and the student the server runs (a small
tiered MLP over features the served int8 models compute, exactly as server/service/relevance.py does).

The relevance stage (`train_relevance`), its export with rule mining, and its evaluation live here too. The
evaluation scores pairs with the server's own cascade (server/relevance_cascade.py), so it measures what is
served."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.featurize import (
    LEXICAL_FEATURES,
    RELEVANCE_FEATURES,
    Featurizer,
    lexical_features,
    title_lexicon_arrays,
)
from server.manifest_parts import QUERY_VECTORS
from server.relevance_cascade import (
    CandidateFeatures,
    candidate_features,
    cascade,
    grade_scores,
    post_features,
)
from server.rules import GRADES, Rules
from server.runtime.index import ProductIndex
from server.runtime.onnx import OnnxModel, ThreadSettings
from training.bm25 import BM25
from training.data.dataset import TrainingData
from training.data.queries import SyntheticQuery, title_substrings
from training.export import export_onnx, run_onnx
from training.gate import PARITY, Paired
from training.metrics import mean_ndcg, ndcg_at_k, per_grade_accuracy, spearman
from training.onnx_teacher import quantize_with_gate
from training.presets import Preset
from training.query_student import FILE as QUERY_STUDENT_FILE
from training.query_student import encode_onnx
from training.relevance_stack import (
    CROSS_ENCODER,
    RELEVANCE_TEACHERS,
    CrossEncoderScorer,
    StackedTeacher,
    stack_encoders,
)
from training.relevance_text import distillation_pairs, text_rows, tiered_probabilities, train_text_student
from training.retrieval import RetrievalResult, encode_queries, exact_top
from training.rules import mine_post_rules, mine_pre_rules, rule_report
from training.static_student import FILE as STATIC_FILE
from training.students import fit
from training.teachers import minilm_dir

KINDS = {"features": "feature_mlp", "text": "text_mlp"}
"""Preset.methods.relevance_student -> the manifest's kind of the relevance component."""


@dataclass
class Pairs:
    """Candidate lists: pair i is (queries[group[i]], titles[i]) with a grade; rows are catalogue rows."""

    queries: list[str]
    group: np.ndarray
    rows: np.ndarray
    titles: list[str]
    grades: np.ndarray

    def subset(self, groups: np.ndarray) -> Pairs:
        keep = np.isin(self.group, groups)
        remap = {g: i for i, g in enumerate(sorted(set(self.group[keep].tolist())))}
        return Pairs(
            [self.queries[g] for g in sorted(remap)],
            np.array([remap[g] for g in self.group[keep]], dtype=np.int64),
            self.rows[keep],
            [t for t, k in zip(self.titles, keep, strict=True) if k],
            self.grades[keep],
        )

    def groups(self, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(scores[self.group == g], self.grades[self.group == g]) for g in range(len(self.queries))]


def catalogue_grade(query_words: list[str], query_cat: int, title_words: list[str], cat: int) -> int:
    """Synthetic judgement from catalogue facts: exact = right category and every query word (or typed
    prefix) in the title; partial = one of the two; irrelevant = neither."""
    full = all(any(t.startswith(w) for t in title_words) for w in query_words)
    same = query_cat == cat
    return 2 if (full and same) else 1 if (full or same) else 0


def make_pairs(
    data: TrainingData, queries: list[SyntheticQuery], featurizer: Featurizer, seed: int, per_query: int = 10
) -> Pairs:
    """Per query: its own product, products of its category and of sibling categories, and random ones, so
    every list holds all three grades."""
    rng = random.Random(seed)
    cats = data.product_labels
    by_cat: dict[int, list[int]] = {}
    for row, c in enumerate(cats.tolist()):
        by_cat.setdefault(c, []).append(row)
    parent = {c: data.catalogue.products[rows[0]].category.rsplit(" > ", 1)[0] for c, rows in by_cat.items()}
    siblings = {c: [d for d in by_cat if parent[d] == parent[c] and d != c] for c in by_cat}
    n = len(data.titles)
    qs, group, rows, titles, grades = [], [], [], [], []
    for q in queries:
        own_cat = int(cats[q.product_row])
        cands = [q.product_row, *rng.sample(by_cat[own_cat], min(3, len(by_cat[own_cat])))]
        if siblings[own_cat]:
            sib = by_cat[rng.choice(siblings[own_cat])]
            cands += rng.sample(sib, min(2, len(sib)))
        while len(cands) < per_query:
            cands.append(rng.randrange(n))
        q_words = featurizer.words(q.text)
        for row in dict.fromkeys(cands):  # unique, order kept
            qs_index = len(qs)
            group.append(qs_index)
            rows.append(row)
            titles.append(data.titles[row])
            grades.append(
                catalogue_grade(q_words, own_cat, featurizer.words(data.titles[row]), int(cats[row]))
            )
        qs.append(q.text)
    return Pairs(qs, np.array(group), np.array(rows), titles, np.array(grades, dtype=np.int64))


def judged_pairs(data: TrainingData) -> Pairs:
    """Pairs from real graded judgements (WANDS, ESCI) where the data has them."""
    row_of = {p.id: i for i, p in enumerate(data.catalogue.products)}
    queries: dict[str, int] = {}
    group, rows, titles, grades = [], [], [], []
    for j in data.judgements:
        if j.product_id not in row_of:
            continue
        group.append(queries.setdefault(j.query, len(queries)))
        rows.append(row_of[j.product_id])
        titles.append(data.titles[row_of[j.product_id]])
        grades.append(j.grade)
    return Pairs(list(queries), np.array(group), np.array(rows), titles, np.array(grades, dtype=np.int64))


def pair_features(
    pairs: Pairs,
    featurizer: Featurizer,
    intent_path: Path,
    encoder_path: Path,
    index: ProductIndex,
    categories: np.ndarray,
    seed: int,
    query_vectors: np.ndarray | None = None,
) -> CandidateFeatures:
    """Features as the server computes them, with the served int8 models. Half the candidates are given as
    titles (embedded online by the student), half by id (the teacher's offline vector from the index).
    `query_vectors` (one per query) replaces the encoder's vector of each query, for the report's
    comparison of query models."""
    rng = np.random.default_rng(seed)
    intent = OnnxModel(intent_path, "intent", ThreadSettings(intra_op=2))
    encoder = OnnxModel(encoder_path, "query_encoder", ThreadSettings(intra_op=2))
    n = len(pairs.titles)
    lexical = {k: np.zeros(n, dtype=np.float32) for k in LEXICAL_FEATURES}
    model_input = np.zeros((n, len(RELEVANCE_FEATURES)), dtype=np.float32)
    category_match = np.zeros(n, dtype=np.float32)
    for g, query in enumerate(pairs.queries):
        idx = np.flatnonzero(pairs.group == g)
        q_words = featurizer.words(query)
        t_words = [featurizer.words(pairs.titles[i]) for i in idx]
        lex = lexical_features(q_words, t_words, featurizer)
        ids = featurizer.ids_of_words([q_words, *t_words])
        vecs = encoder.run({"ids": ids})
        probs = intent.run({"ids": ids})
        as_title = rng.random(len(idx)) < 0.5
        cand_vecs = np.where(as_title[:, None], vecs[1:], index.vectors(pairs.rows[idx]))
        cats = np.where(as_title, probs[1:].argmax(1), categories[pairs.rows[idx]])
        cats = np.maximum(cats, 0)
        query_vector = vecs[0] if query_vectors is None else query_vectors[g]
        f = candidate_features(lex, query_vector, cand_vecs, probs[0], cats)
        model_input[idx], category_match[idx] = f.model_input, f.category_match
        for k, v in lex.items():
            lexical[k][idx] = v
    return CandidateFeatures(lexical, model_input, category_match)


def text_pair_features(
    pairs: Pairs,
    featurizer: Featurizer,
    out: Path,
    index: ProductIndex,
    categories: np.ndarray,
    lexicon: dict[str, np.ndarray],
    seed: int,
    query_vectors: np.ndarray | None = None,
) -> tuple[CandidateFeatures, np.ndarray]:
    """pair_features with the int8 intent model and query encoder in `out`, and the text student's rows of
    them (the four features, then the n-grams of the query and of the title from `lexicon`)."""
    feats = pair_features(
        pairs,
        featurizer,
        out / "intent.onnx",
        out / "query_encoder.onnx",
        index,
        categories,
        seed,
        query_vectors,
    )
    rows = text_rows(pairs.queries, pairs.group, pairs.rows, feats.model_input, lexicon, featurizer)
    return feats, rows


def title_pair_features(
    queries: list[str],
    titles: list[str],
    featurizer: Featurizer,
    intent_path: Path,
    encoder_path: Path,
    query_vectors: np.ndarray | None = None,
) -> tuple[CandidateFeatures, np.ndarray]:
    """Features of (query, title) pairs whose products the bundle does not know, as the server computes
    them for candidates given by title, and the text student's rows of them. `query_vectors` (one per
    pair) replaces the encoder's vector of each query, as for pair_features."""
    from server.featurize import query_grams, text_relevance_input, title_sets

    intent = OnnxModel(intent_path, "intent", ThreadSettings(intra_op=2))
    encoder = OnnxModel(encoder_path, "query_encoder", ThreadSettings(intra_op=2))
    n = len(titles)
    lexical = {k: np.zeros(n, dtype=np.float32) for k in LEXICAL_FEATURES}
    model_input = np.zeros((n, len(RELEVANCE_FEATURES)), dtype=np.float32)
    category_match = np.zeros(n, dtype=np.float32)
    text = []
    for i, (query, title) in enumerate(zip(queries, titles, strict=True)):
        q_words, t_words = featurizer.words(query), featurizer.words(title)
        lex = lexical_features(q_words, [t_words], featurizer)
        ids = featurizer.ids_of_words([q_words, t_words])
        vecs, probs = encoder.run({"ids": ids}), intent.run({"ids": ids})
        query_vector = vecs[0] if query_vectors is None else query_vectors[i]
        f = candidate_features(lex, query_vector, vecs[1:], probs[0], probs[1:].argmax(1))
        model_input[i], category_match[i] = f.model_input[0], f.category_match[0]
        for k, v in lex.items():
            lexical[k][i] = v[0]
        grams = query_grams(q_words, featurizer)
        sets = title_sets([t_words], featurizer)
        text.append(
            text_relevance_input(
                grams, sets, np.zeros(1, np.int64), f.model_input, featurizer.config.num_buckets
            )
        )
    return CandidateFeatures(lexical, model_input, category_match), np.concatenate(text)


class TieredRelevanceHead(nn.Module):
    """Alibaba's tiered relevance: for three grades a recall head (is it relevant at all?) and a refine head
    (exact or only partial?) on a shared trunk; for n grades, n - 1 such gates (tiered_probabilities)."""

    def __init__(self, num_features: int, hidden: int = 32, num_grades: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU())
        self.heads = nn.Linear(hidden, num_grades - 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return tiered_probabilities(torch.sigmoid(self.heads(self.trunk(features))))

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log(self.forward(features).clamp(min=1e-7))


class FlatRelevanceHead(nn.Module):
    """The ablation: one softmax over the grades."""

    def __init__(self, num_features: int, hidden: int = 32, num_grades: int = 3) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_grades))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.mlp(features), dim=-1)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.mlp(features), dim=-1)


def train_relevance_head(
    features: np.ndarray,
    grades: np.ndarray,
    teacher_probs: np.ndarray | None,
    preset: Preset,
    seed: int,
    num_grades: int = len(GRADES),
) -> nn.Module:
    """Hard grades, plus the cross-encoder teacher's distribution where there is one (BERT2DNN again)."""
    head: nn.Module = (TieredRelevanceHead if preset.methods.tiered_relevance else FlatRelevanceHead)(
        features.shape[1], num_grades=num_grades
    )
    x, y = torch.from_numpy(features), torch.from_numpy(grades)
    soft = torch.from_numpy(teacher_probs.astype(np.float32)) if teacher_probs is not None else None

    def loss(idx: np.ndarray) -> torch.Tensor:
        logp = head.log_probs(x[idx])
        hard = F.nll_loss(logp, y[idx])
        if soft is None:
            return hard
        return (
            preset.soft_weight * F.kl_div(logp, soft[idx], reduction="batchmean")
            + (1 - preset.soft_weight) * hard
        )

    fit(head, len(x), loss, 30, 256, 1e-2, seed, "relevance")
    return head


def evaluate_ranking(
    pairs: Pairs, scores: np.ndarray, grades: np.ndarray | None = None, names: tuple[str, ...] = GRADES
) -> dict[str, float]:
    """nDCG@10 of `scores`; with predicted `grades`, their accuracy overall and per grade (`names`)."""
    out = {"ndcg_at_10": round(mean_ndcg(pairs.groups(scores), 10), 4)}
    if grades is not None:
        out["grade_accuracy"] = round(float(np.mean(grades == pairs.grades)), 4)
        per_grade = per_grade_accuracy(grades, pairs.grades, names)
        out.update({f"accuracy_{k}": round(v, 4) for k, v in per_grade.items()})
    return out


def bm25_scores(pairs: Pairs) -> np.ndarray:
    """The lexical floor: BM25 of the query against its own candidate list."""
    out = np.zeros(len(pairs.titles), dtype=np.float32)
    for g, query in enumerate(pairs.queries):
        idx = np.flatnonzero(pairs.group == g)
        out[idx] = BM25([pairs.titles[i] for i in idx]).scores(query)
    return out


@dataclass
class RelevanceResult:
    head: torch.nn.Module
    train: Pairs
    dev: Pairs
    eval: Pairs
    features: dict[str, Any]
    teacher_eval_probs: np.ndarray | None
    teacher_seconds: float
    teacher: Any = None
    """The cross-encoder teacher's FineTuneResult (model and tokenizer), for agreement checks."""
    kind: str = "feature_mlp"
    """The student's manifest kind: feature_mlp reads model_input[:, :4], text_mlp the whole row."""
    distillation: dict[str, Any] = field(default_factory=dict)
    """The unlabelled pairs the text student learned from: counts by source, teacher labelling time."""
    distill_x: np.ndarray | None = None
    distill_probs: np.ndarray | None = None
    teacher_train_probs: np.ndarray | None = None
    grades: tuple[str, ...] = GRADES
    """The data's grade set, worst to best (TrainingData.grades): what the student outputs."""
    stack: StackedTeacher | None = None
    """The stacked teacher (cross-encoder and bi-encoder cosines), when the preset distils it."""
    teacher_parts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Per split (train, dev, eval, distill): each teacher's answers per pair (relevance_stack.parts), so
    the report measures every teacher alone and stacked, and the cross-encoder-only ablation needs no
    relabelling."""
    teacher_name: str = "cross-encoder"
    """What the students distilled (the report's and the retention's teacher)."""
    cosine: str = "query_encoder"
    """The query model the cosine feature took the query's vector from (QUERY_VECTORS); the server must
    take it from the same one (the manifest's relevance component says which)."""
    distill_pairs: Pairs | None = None
    """The unlabelled pairs of distill_x, so a variant can recompute their features."""

    def teacher_probabilities(self, queries: list[str], titles: list[str]) -> np.ndarray:
        """The distilled teacher's grade probabilities of (query, title) pairs."""
        from training.finetune import cross_encoder_probabilities

        with torch.inference_mode():
            if self.stack is not None:
                return self.stack.probabilities(queries, titles)
            return cross_encoder_probabilities(self.teacher.model, self.teacher.tokenizer, queries, titles)

    def inputs(self, split: str) -> np.ndarray:
        """What the student reads for a split's pairs (its manifest kind's columns)."""
        x = self.features[split].model_input
        return x if self.kind == "text_mlp" else x[:, : len(RELEVANCE_FEATURES)]


def train_relevance(
    data: TrainingData,
    featurizer: Featurizer,
    out: Path,
    r: RetrievalResult,
    preset: Preset,
    seed: int,
    real_queries: list[str] | None = None,
) -> RelevanceResult:
    """Pairs from training products (split into train and dev queries, dev for rule checks) and from
    held-out products (evaluation); a cross-encoder teacher, by default stacked with the bi-encoders' cosines
    on the dev pairs (training/relevance_stack.py); the tiered student on served features."""
    from training.finetune import cross_encoder_probabilities, finetune_cross_encoder

    labels = data.product_labels.tolist()
    rng = random.Random(seed)
    train_rows = rng.sample(data.train_rows, min(len(data.train_rows), preset.relevance_queries))
    queries = title_substrings(data.titles, labels, train_rows, 1, featurizer, seed + 2)
    heldout = title_substrings(data.titles, labels, data.heldout_rows, 1, featurizer, seed + 3)
    if data.judgements:
        pairs = judged_pairs(data)
        groups = np.random.default_rng(seed).permutation(len(pairs.queries))
        n = len(groups)
        train, dev, ev = (
            pairs.subset(groups[: int(0.7 * n)]),
            pairs.subset(groups[int(0.7 * n) : int(0.8 * n)]),
            pairs.subset(groups[int(0.8 * n) :]),
        )
    else:
        all_train = make_pairs(data, queries, featurizer, seed)
        n_dev = max(1, len(all_train.queries) // 5)
        dev, train = (
            all_train.subset(np.arange(n_dev)),
            all_train.subset(np.arange(n_dev, len(all_train.queries))),
        )
        ev = make_pairs(data, heldout, featurizer, seed + 1)

    # The served int8 models compute the features, exactly as the server will.
    index = ProductIndex(out / "index.usearch", preset.methods.views)
    cosine, query_vectors = relevance_query_vectors(preset, out)
    feats = {
        name: pair_features(
            p,
            featurizer,
            out / "intent.onnx",
            out / "query_encoder.onnx",
            index,
            data.product_labels,
            seed,
            query_vectors(p.queries),
        )
        for name, p in (("train", train), ("dev", dev), ("eval", ev))
    }
    if preset.methods.relevance_teacher not in RELEVANCE_TEACHERS:
        known = RELEVANCE_TEACHERS
        raise ValueError(f"relevance_teacher {preset.methods.relevance_teacher!r}; known: {known}")
    teacher_train = teacher_eval = ce = stack = None
    parts: dict[str, dict[str, np.ndarray]] = {}
    seconds = 0.0
    if preset.methods.cross_encoder:
        start = time.perf_counter()
        pick = np.random.default_rng(seed).permutation(len(train.titles))[: preset.cross_encoder_pairs]
        q_of = [train.queries[g] for g in train.group]
        ce = finetune_cross_encoder(
            minilm_dir(),
            [q_of[i] for i in pick],
            [train.titles[i] for i in pick],
            train.grades[pick],
            train_top=preset.teacher_train_top,
            epochs=preset.teacher_epochs + 1,
            seed=seed,
            num_grades=len(data.grades),
        )
        seconds = time.perf_counter() - start
        teacher_train = cross_encoder_probabilities(ce.model, ce.tokenizer, q_of, train.titles)
        teacher_eval = cross_encoder_probabilities(
            ce.model, ce.tokenizer, [ev.queries[g] for g in ev.group], ev.titles
        )
        if preset.methods.relevance_teacher == "stacked":
            stack, parts = _stacked_teacher(
                ce,
                preset,
                {"train": train, "dev": dev, "eval": ev},
                {"train": teacher_train, "eval": teacher_eval},
                data.grades,
            )
            teacher_train, teacher_eval = stack.combine(parts["train"]), stack.combine(parts["eval"])
        else:
            parts = {"train": {CROSS_ENCODER: teacher_train}, "eval": {CROSS_ENCODER: teacher_eval}}
    # What either student's result holds: the pairs, their features (the text student's rows replace them in
    # `feats` below) and the teacher (`parts` gains the unlabelled pairs' answers below).
    result = partial(
        RelevanceResult,
        train=train,
        dev=dev,
        eval=ev,
        features=feats,
        teacher_eval_probs=teacher_eval,
        teacher_seconds=round(seconds, 2),
        teacher=ce,
        teacher_train_probs=teacher_train,
        grades=data.grades,
        stack=stack,
        teacher_parts=parts,
        teacher_name=f"stacked ({' + '.join(stack.names)})" if stack is not None else "cross-encoder",
        cosine=cosine,
    )
    kind = KINDS[preset.methods.relevance_student]
    if kind == "feature_mlp":
        head = train_relevance_head(
            feats["train"].model_input, train.grades, teacher_train, preset, seed, len(data.grades)
        )
        return result(head)

    # The text student: every split's rows carry the query's and title's n-grams after the four features.
    lexicon = title_lexicon_arrays(data.titles, featurizer)
    for name, p in (("train", train), ("dev", dev), ("eval", ev)):
        x = text_rows(p.queries, p.group, p.rows, feats[name].model_input, lexicon, featurizer)
        feats[name] = replace(feats[name], model_input=x)
    distill_x = distill_probs = None
    unlabelled: Pairs | None = None
    stats: dict[str, Any] = {"labelled_pairs": len(train.titles)}
    if ce is not None and preset.relevance_distill_pairs > 0:
        from training.finetune import cross_encoder_probabilities

        vocabulary = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").split()
        d = distillation_pairs(
            data,
            featurizer,
            lambda texts: _dense_neighbours(r, featurizer, texts),
            preset.relevance_distill_pairs,
            seed,
            vocabulary,
            real_queries if real_queries is not None else data.real("train")[0],
            preset.relevance_word_runs,
        )
        titles = [data.titles[i] for i in d.rows]
        unlabelled = Pairs(d.queries, d.group, d.rows, titles, np.full(len(d.rows), -1, dtype=np.int64))
        _, distill_x = text_pair_features(
            unlabelled,
            featurizer,
            out,
            index,
            data.product_labels,
            lexicon,
            seed + 5,
            query_vectors(unlabelled.queries),
        )
        start = time.perf_counter()
        d_queries = [d.queries[g] for g in d.group]
        with torch.inference_mode():
            distill_probs = cross_encoder_probabilities(ce.model, ce.tokenizer, d_queries, titles)
            parts["distill"] = {CROSS_ENCODER: distill_probs}
            if stack is not None:
                parts["distill"] = stack.parts(d_queries, titles, distill_probs)
                distill_probs = stack.combine(parts["distill"])
        stats |= {
            "unlabelled_pairs": len(d.rows),
            "unlabelled_queries": len(d.queries),
            "sources": d.sources,
            "teacher_labelling_seconds": round(time.perf_counter() - start, 1),
        }
    head = fit_text_student(
        feats["train"].model_input,
        train.grades,
        teacher_train,
        distill_x,
        distill_probs,
        preset,
        seed,
        num_grades=len(data.grades),
    )
    return result(
        head,
        kind=kind,
        distillation=stats,
        distill_x=distill_x,
        distill_probs=distill_probs,
        distill_pairs=unlabelled,
    )


QUERY_MODEL_FILES = {"query_student": QUERY_STUDENT_FILE, "query_static": STATIC_FILE}
"""The file of each query model (besides the hashed encoder) that a relevance cosine can read, fed word
pieces by encode_onnx."""


def relevance_query_vectors(
    preset: Preset, out: Path
) -> tuple[str, Callable[[list[str]], np.ndarray | None]]:
    """Which query model the relevance cosine feature takes the query's vector from, and a function giving
    those vectors (None: the hashed encoder's, which pair_features computes itself). The transformer query
    student, or the static word-piece model, is used only when retrieval shipped it in `out`; otherwise the
    encoder, and the name says so."""
    wanted = preset.methods.relevance_cosine
    if wanted not in QUERY_VECTORS:
        raise ValueError(f"relevance_cosine {wanted!r}; known: {QUERY_VECTORS}")
    if wanted == "query_encoder" or not (out / QUERY_MODEL_FILES[wanted]).is_file():
        return "query_encoder", lambda texts: None
    return wanted, lambda texts: encode_onnx(out / QUERY_MODEL_FILES[wanted], texts)


def _stacked_teacher(
    ce: Any,
    preset: Preset,
    splits: dict[str, Pairs],
    known: dict[str, np.ndarray],
    grades: tuple[str, ...],
) -> tuple[StackedTeacher, dict[str, dict[str, np.ndarray]]]:
    """The cross-encoder stacked with the preset's bi-encoders and the word share, fitted on the dev pairs
    (which the cross-encoder never trained on); each split's teacher parts, the cross-encoder's probabilities
    of train and eval as passed in (train_relevance has them)."""
    stack = StackedTeacher(CrossEncoderScorer(ce), dict.fromkeys(stack_encoders(preset)), words=True)
    parts = {}
    with torch.inference_mode():
        for name, p in splits.items():
            parts[name] = stack.parts([p.queries[g] for g in p.group], p.titles, known.get(name))
    stack.fit(parts["dev"], splits["dev"].grades, len(grades))
    return stack, parts


def fit_text_student(
    x: np.ndarray,
    grades: np.ndarray,
    teacher: np.ndarray | None,
    distill_x: np.ndarray | None,
    distill_probs: np.ndarray | None,
    preset: Preset,
    seed: int,
    temperature: float | None = None,
    num_grades: int = len(GRADES),
) -> nn.Module:
    """The text student on the labelled pairs (hard grades, and the teacher's where there is one) and the
    unlabelled pairs (the teacher's alone)."""
    probs = teacher
    if distill_x is not None and distill_probs is not None and teacher is not None:
        x = np.concatenate([x, distill_x])
        grades = np.concatenate([grades, np.full(len(distill_x), -1, dtype=np.int64)])
        probs = np.concatenate([teacher, distill_probs])
    return train_text_student(
        x,
        probs if preset.methods.soft_labels or teacher is None else None,
        grades,
        preset.num_buckets,
        preset.relevance_dim,
        preset.relevance_hidden,
        preset.relevance_epochs,
        preset.relevance_temperature if temperature is None else temperature,
        preset.soft_weight,
        preset.methods.tiered_relevance,
        seed,
        num_grades,
    )


def _dense_neighbours(r: RetrievalResult, featurizer: Featurizer, texts: list[str]) -> np.ndarray:
    """The hashed two-tower's exact top 10 product rows of each text, in chunks (the score cube is big)."""
    out = [
        exact_top(encode_queries(r.encoder, featurizer, texts[i : i + 256]), r.product_vecs, 10)
        for i in range(0, len(texts), 256)
    ]
    return np.concatenate(out) if out else np.zeros((0, 10), dtype=np.int64)


def export_relevance(
    r: RelevanceResult, out: Path, tmp: Path, preset: Preset
) -> tuple[dict[str, Any], Rules, Paired | None]:
    """Int8 export, rule mining, and the served cascade's evaluation; with a cross-encoder teacher, also
    the per-query nDCG@10 of student and teacher for the retention gate."""
    x_eval = r.inputs("eval")
    export_onnx(r.head, torch.from_numpy(x_eval[:2]), "features", "probabilities", tmp / "relevance.onnx")
    fp32 = run_onnx(tmp / "relevance.onnx", "relevance", "features", x_eval).argmax(1)
    gate = quantize_with_gate(
        tmp / "relevance.onnx",
        out / "relevance.onnx",
        lambda path: float(np.mean(run_onnx(path, "relevance", "features", x_eval).argmax(1) == fp32)),
        PARITY["relevance"],
    )
    probs = {k: run_onnx(out / "relevance.onnx", "relevance", "features", r.inputs(k)) for k in r.features}
    pre: list = []
    post: list = []
    if preset.methods.rules:
        tr, dv = r.features["train"], r.features["dev"]
        pre = mine_pre_rules(tr.lexical, r.train.grades, dv.lexical, r.dev.grades, r.grades)
        post = mine_post_rules(
            post_features(tr, probs["train"]),
            r.train.grades,
            post_features(dv, probs["dev"]),
            r.dev.grades,
            r.grades,
        )
    rules = Rules({}, tuple(pre), tuple(post), r.grades)
    ef = r.features["eval"]
    served = cascade(rules, ef, probs["eval"])
    scores, grades = served.scores, served.grades
    model_only = probs["eval"]
    result: dict[str, Any] = {
        "eval_queries": len(r.eval.queries),
        "eval_pairs": len(r.eval.titles),
        "student": evaluate_ranking(r.eval, scores, grades, r.grades),
        "student_model_only": evaluate_ranking(
            r.eval, grade_scores(model_only), model_only.argmax(1), r.grades
        ),
        "bm25": evaluate_ranking(r.eval, bm25_scores(r.eval)),
        "tiered": preset.methods.tiered_relevance,
        "student_kind": r.kind,
        "student_parameters": sum(p.numel() for p in r.head.parameters()),
        "distillation": r.distillation,
        "quantization": gate,
        "grades": list(r.grades),
        "pre_rules": rule_report(pre, ef.lexical, r.eval.grades, r.grades),
        "post_rules": rule_report(post, post_features(ef, probs["eval"]), r.eval.grades, r.grades),
    }
    paired = None
    if r.teacher_eval_probs is not None:
        # The teacher is what the students distilled (stacked or the cross-encoder alone); the cross-encoder
        # alone is kept under its own key either way.
        t = r.teacher_eval_probs
        result["teacher"] = evaluate_ranking(r.eval, grade_scores(t), t.argmax(1), r.grades)
        result["teacher_name"] = r.teacher_name
        ce = r.teacher_parts.get("eval", {}).get(CROSS_ENCODER, t)
        result["teacher_cross_encoder"] = evaluate_ranking(r.eval, grade_scores(ce), ce.argmax(1), r.grades)
        result["teacher_train_seconds"] = r.teacher_seconds
        result["retention"] = round(
            result["student"]["ndcg_at_10"] / max(result["teacher"]["ndcg_at_10"], 1e-9), 4
        )
        result["student_teacher_score_spearman"] = round(spearman(scores, grade_scores(t)), 4)
        per_query = [
            (ndcg_at_k(s, g), ndcg_at_k(ts, g))
            for (s, g), (ts, _) in zip(r.eval.groups(scores), r.eval.groups(grade_scores(t)), strict=True)
        ]
        per_query = [p for p in per_query if not np.isnan(p[0])]  # no relevant candidate: says nothing
        paired = Paired(
            "nDCG@10 per query", np.array([p[0] for p in per_query]), np.array([p[1] for p in per_query])
        )
    return result, rules, paired
