"""Relevance: graded query-product pairs, a cross-encoder teacher, and the student the server runs (a small
tiered MLP over features the served int8 models compute, exactly as server/service/relevance.py does)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.featurize import Featurizer, lexical_features, relevance_features
from server.runtime.index import ProductIndex
from server.runtime.onnx import OnnxModel, ThreadSettings
from training.bm25 import BM25
from training.data.dataset import TrainingData
from training.data.queries import SyntheticQuery
from training.metrics import mean_ndcg, per_grade_accuracy
from training.presets import Preset
from training.students import fit

GRADE_VALUES = np.array([0.0, 0.5, 1.0], dtype=np.float32)


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


@dataclass
class PairFeatures:
    lexical: dict[str, np.ndarray]
    model_input: np.ndarray
    category_match: np.ndarray


def pair_features(
    pairs: Pairs,
    featurizer: Featurizer,
    intent_path: Path,
    encoder_path: Path,
    index: ProductIndex,
    categories: np.ndarray,
    seed: int,
) -> PairFeatures:
    """Features as the server computes them, with the served int8 models. Half the candidates are given as
    titles (embedded online by the student), half by id (the teacher's offline vector from the index)."""
    rng = np.random.default_rng(seed)
    intent = OnnxModel(intent_path, "intent", ThreadSettings(intra_op=2))
    encoder = OnnxModel(encoder_path, "query_encoder", ThreadSettings(intra_op=2))
    n = len(pairs.titles)
    lexical = {k: np.zeros(n, dtype=np.float32) for k in ("title_equal", "word_coverage", "char_coverage")}
    lexical["query_words"] = np.zeros(n, dtype=np.float32)
    model_input = np.zeros((n, 4), dtype=np.float32)
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
        model_input[idx] = relevance_features(lex, vecs[0], cand_vecs, probs[0][cats])
        category_match[idx] = cats == probs[0].argmax()
        for k, v in lex.items():
            lexical[k][idx] = v
    return PairFeatures(lexical, model_input, category_match)


class TieredRelevanceHead(nn.Module):
    """Alibaba's tiered relevance: a recall head (is it relevant at all?) and a refine head (exact or only
    partial?) on a shared trunk. P(irrelevant) = 1 - r, P(partial) = r (1 - e), P(exact) = r e."""

    def __init__(self, num_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU())
        self.heads = nn.Linear(hidden, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        r, e = torch.sigmoid(self.heads(self.trunk(features))).unbind(-1)
        return torch.stack([1 - r, r * (1 - e), r * e], dim=-1)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log(self.forward(features).clamp(min=1e-7))


class FlatRelevanceHead(nn.Module):
    """The ablation: one 3-way softmax."""

    def __init__(self, num_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, 3))

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
) -> nn.Module:
    """Hard grades, plus the cross-encoder teacher's distribution where there is one (BERT2DNN again)."""
    head: nn.Module = (TieredRelevanceHead if preset.methods.tiered_relevance else FlatRelevanceHead)(
        features.shape[1]
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


def evaluate_ranking(pairs: Pairs, scores: np.ndarray, grades: np.ndarray | None = None) -> dict[str, float]:
    out = {"ndcg_at_10": round(mean_ndcg(pairs.groups(scores), 10), 4)}
    if grades is not None:
        out["grade_accuracy"] = round(float(np.mean(grades == pairs.grades)), 4)
        out.update(
            {f"accuracy_{k}": round(v, 4) for k, v in per_grade_accuracy(grades, pairs.grades).items()}
        )
    return out


def bm25_scores(pairs: Pairs) -> np.ndarray:
    """The lexical floor: BM25 of the query against its own candidate list."""
    out = np.zeros(len(pairs.titles), dtype=np.float32)
    for g, query in enumerate(pairs.queries):
        idx = np.flatnonzero(pairs.group == g)
        out[idx] = BM25([pairs.titles[i] for i in idx]).scores(query)
    return out
