"""The relevance student that reads the text (BERT2DNN for relevance): hashed word and character n-grams of
the query and of the title, embedding bags of each side, their interactions (the query n-grams the title
holds and where they sit in the query) and the four served features, distilled from the cross-encoder
teacher's temperature-softened grades on a large unlabelled set of (query, product) pairs.

The model reads server/featurize.py's text_relevance_input rows (manifest kind "text_mlp"): the product side
of those rows comes from the lexicon arrays the bundle already stores per product, so candidates given by id
need no text work at serving time.

The unlabelled pairs (`distillation_pairs`):
- catalogue title substrings against their own product, products of the same category (siblings) and of a
  sibling category, and strangers;
- query-like texts (queries generated from label names, and teacher-vocabulary words alone and before label
  names) against the products retrieval returns for them (BM25 over the titles and the hashed two-tower's
  exact neighbours), and strangers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.featurize import (
    NUM_QUERY_SLOTS,
    RELEVANCE_FEATURES,
    TEXT_QUERY_IDS,
    TEXT_RELEVANCE_WIDTH,
    Featurizer,
    query_grams,
    text_relevance_input,
)
from server.rules import grade_values
from training.bm25 import BM25
from training.data.augment import augment_queries, generate_label_queries, vocabulary_queries, word_runs
from training.data.dataset import TrainingData
from training.data.queries import title_substrings
from training.students import fit
from training.transformer_student import whole_words

F0 = len(RELEVANCE_FEATURES)
Q_IDS = slice(F0, F0 + TEXT_QUERY_IDS)
Q_SLOTS = slice(F0 + TEXT_QUERY_IDS, F0 + 2 * TEXT_QUERY_IDS)
Q_MATCH = slice(F0 + 2 * TEXT_QUERY_IDS, F0 + 3 * TEXT_QUERY_IDS)
T_IDS = slice(F0 + 3 * TEXT_QUERY_IDS, TEXT_RELEVANCE_WIDTH)
Q_BAG = slice(F0 + TEXT_QUERY_IDS, None)
"""A text_bags row's title bag: after the features and the match block."""


def tiered_probabilities(gates: torch.Tensor) -> torch.Tensor:
    """Alibaba's tiered relevance over n grades, worst to best, from n - 1 sigmoid gates: gate k is P(above
    grade k | at least grade k), so P(grade k) = g_0 ... g_(k-1) (1 - g_k). For three grades the gates are
    the recall head r (relevant at all?) and the refine head e (exact, not partial?): P(irrelevant) = 1 - r,
    P(partial) = r (1 - e), P(exact) = r e."""
    probs = []
    reach: torch.Tensor | None = None  # P(at least grade k); None for 1 at grade 0
    for gate in gates.unbind(-1):
        probs.append(1 - gate if reach is None else reach * (1 - gate))
        reach = gate if reach is None else reach * gate
    return torch.stack([*probs, reach], dim=-1)


class TextRelevanceStudent(nn.Module):
    """text_relevance_input rows -> probabilities of the data's grades (worst to best), tiered as the feature
    student is (tiered_probabilities: gates on a shared trunk) or a flat softmax.

    Inside: one hashed n-gram table for both sides; the query's ids also get an embedding of their slot
    (last word, previous word, ...). Bags: the query, the title, their product, the query n-grams the title
    holds and those it lacks; per slot, the share of the query's n-grams the title holds and whether the
    query has that slot at all; and the four served features."""

    def __init__(
        self, num_buckets: int, dim: int, hidden: int, tiered: bool = True, num_grades: int = 3
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_buckets, dim, padding_idx=0, sparse=True)
        nn.init.normal_(self.embedding.weight, std=0.05)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.slot = nn.Embedding(NUM_QUERY_SLOTS, dim)
        nn.init.normal_(self.slot.weight, std=0.05)
        slots = NUM_QUERY_SLOTS - 1
        self.trunk = nn.Sequential(
            nn.Linear(5 * dim + F0 + 2 * slots, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU()
        )
        self.register_buffer("slot_ids", torch.arange(1, NUM_QUERY_SLOTS), persistent=False)
        self.tiered = tiered
        self.out = nn.Linear(hidden // 2, num_grades - 1 if tiered else num_grades)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        feats = x[:, :F0]
        q_ids, q_slots = x[:, Q_IDS].to(torch.int64), x[:, Q_SLOTS].to(torch.int64)
        match, t_ids = x[:, Q_MATCH], x[:, T_IDS].to(torch.int64)
        q_mask = (q_ids > 0).to(torch.float32)
        q_n = q_mask.sum(1, keepdim=True).clamp(min=1.0)
        held = match * q_mask
        # The three query bags (all, held by the title, missing from it) as one batched matrix product.
        weights = torch.stack([q_mask, held, q_mask - held], dim=1) / q_n.unsqueeze(-1)
        q_bag, matched, missing = torch.matmul(weights, self.query_embeddings(q_ids, q_slots)).unbind(1)
        one_hot = self.slot_one_hot(q_slots, q_mask)
        return self.head_of(feats, held, q_bag, self.title_bag(t_ids), matched, missing, one_hot)

    def query_embeddings(self, q_ids: torch.Tensor, q_slots: torch.Tensor) -> torch.Tensor:
        """[.., TEXT_QUERY_IDS, dim]: each query id's embedding plus that of its slot."""
        return self.embedding(q_ids) + self.slot(q_slots)

    def title_bag(self, t_ids: torch.Tensor) -> torch.Tensor:
        """[titles, dim]: the mean embedding of each title's ids (0 pads)."""
        t_mask = (t_ids > 0).to(torch.float32)
        t_weights = (t_mask / t_mask.sum(1, keepdim=True).clamp(min=1.0)).unsqueeze(1)
        return torch.matmul(t_weights, self.embedding(t_ids)).squeeze(1)

    def slot_one_hot(self, q_slots: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
        """[.., TEXT_QUERY_IDS, slots]: which slot each (present) query id sits in."""
        return (q_slots.unsqueeze(-1) == self.slot_ids).to(torch.float32) * q_mask.unsqueeze(-1)

    def head_of(
        self,
        feats: torch.Tensor,
        held: torch.Tensor,
        q_bag: torch.Tensor,
        t_bag: torch.Tensor,
        matched: torch.Tensor,
        missing: torch.Tensor,
        one_hot: torch.Tensor,
    ) -> torch.Tensor:
        """The trunk over the bags; per slot, the share of the query's n-grams in it that the title holds,
        and whether it has any. `q_bag` and `one_hot` may be one query's, broadcast over the candidates."""
        count = one_hot.sum(-2)
        share = torch.matmul(held.unsqueeze(1), one_hot).squeeze(1) / count.clamp(min=1.0)
        present = (count > 0).to(torch.float32).expand(share.shape)
        q_bag = q_bag.expand(t_bag.shape)
        parts = [q_bag, t_bag, q_bag * t_bag, matched, missing, feats, share, present]
        return self.trunk(torch.cat(parts, dim=-1))

    def grades_of(self, out: torch.Tensor) -> torch.Tensor:
        if not self.tiered:
            return torch.softmax(out, dim=-1)
        return tiered_probabilities(torch.sigmoid(out))

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        out = self.out(self.encode(x))
        if not self.tiered:
            return torch.log_softmax(out, dim=-1)
        return torch.log(tiered_probabilities(torch.sigmoid(out)).clamp(min=1e-7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grades_of(self.out(self.encode(x)))


class TitleBagModel(nn.Module):
    """A text student's title side as its own graph (manifest kind text_bags, title_model): title ids
    (server/featurize.py title_id_block) -> bag. Run over the catalogue when the bundle is built, and online
    for candidates given by title."""

    def __init__(self, student: TextRelevanceStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, title_ids: torch.Tensor) -> torch.Tensor:
        return self.student.title_bag(title_ids.to(torch.int64))


class BagsRelevanceModel(nn.Module):
    """A text student's scoring graph of kind text_bags: one query ([1, 2 * TEXT_QUERY_IDS], ids then
    slots) is embedded once, and every candidate row holds the four features, the match block and its title's
    bag. The same numbers as the student's text_mlp rows, without the 100-fold query embedding and the
    title lookups of every call."""

    def __init__(self, student: TextRelevanceStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, query: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        s = self.student
        q_ids = query[:, :TEXT_QUERY_IDS].to(torch.int64)
        q_slots = query[:, TEXT_QUERY_IDS:].to(torch.int64)
        feats, match, t_bag = features[:, :F0], features[:, F0 : F0 + TEXT_QUERY_IDS], features[:, Q_BAG]
        q_mask = (q_ids > 0).to(torch.float32)  # [1, ids]
        q_n = q_mask.sum(1, keepdim=True).clamp(min=1.0)
        q_emb = s.query_embeddings(q_ids, q_slots)[0]  # [ids, dim]
        held = match * q_mask
        # One query: the bags are plain matrix products over its embeddings, and missing = all - held.
        q_bag = torch.matmul(q_mask / q_n, q_emb)
        matched = torch.matmul(held / q_n, q_emb)
        one_hot = s.slot_one_hot(q_slots, q_mask)[0]
        return s.grades_of(s.out(s.head_of(feats, held, q_bag, t_bag, matched, q_bag - matched, one_hot)))


def text_rows(
    queries: list[str],
    group: np.ndarray,
    rows: np.ndarray,
    features: np.ndarray,
    lexicon: dict[str, np.ndarray],
    featurizer: Featurizer,
) -> np.ndarray:
    """text_relevance_input for every pair (queries[group[i]], product rows[i]) over the catalogue's
    lexicon arrays, with the pairs' served RELEVANCE_FEATURES."""
    out = np.zeros((len(rows), TEXT_RELEVANCE_WIDTH), dtype=np.float32)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    for idx in np.split(order, bounds):
        if not len(idx):
            continue
        grams = query_grams(featurizer.words(queries[int(group[idx[0]])]), featurizer)
        out[idx] = text_relevance_input(
            grams, lexicon, rows[idx], features[idx], featurizer.config.num_buckets
        )
    return out


@dataclass
class DistillationPairs:
    """Unlabelled pairs: pair i is (queries[group[i]], catalogue row rows[i])."""

    queries: list[str]
    group: np.ndarray
    rows: np.ndarray
    sources: dict[str, int]


def distillation_pairs(
    data: TrainingData,
    featurizer: Featurizer,
    neighbours: Callable[[list[str]], np.ndarray],
    n_pairs: int,
    seed: int,
    vocabulary: list[str],
    real_queries: list[str] | None = None,
    runs_share: float = 0.0,
) -> DistillationPairs:
    """About `n_pairs` unlabelled (query, product) pairs: half title substrings of training products
    against their product, same-category siblings, a sibling category's product and strangers; half
    query texts against what BM25 and the dense two-tower return for them, and strangers. The query texts
    are real training queries and ten augmented copies of each (a word dropped, a modifier added, words
    swapped, the last word cut), when there are any, then queries generated from label names and
    vocabulary words, and `runs_share` of the generated ones random runs of whole vocabulary words (queries
    about anything, most of them far from the catalogue)."""
    rng = random.Random(seed)
    labels = data.product_labels.tolist()
    n = len(data.titles)
    by_cat: dict[int, list[int]] = {}
    for row, c in enumerate(labels):
        by_cat.setdefault(c, []).append(row)
    parent = {c: data.catalogue.products[rows[0]].category.rsplit(" > ", 1)[0] for c, rows in by_cat.items()}
    sibling_cats = {c: [d for d in by_cat if parent[d] == parent[c] and d != c] for c in by_cat}
    queries: list[str] = []
    group: list[int] = []
    rows: list[int] = []
    sources: dict[str, int] = {}

    def add(source: str, text: str, cands: list[int]) -> None:
        cands = list(dict.fromkeys(cands))
        group.extend([len(queries)] * len(cands))
        rows.extend(cands)
        queries.append(text)
        sources[source] = sources.get(source, 0) + len(cands)

    per_query = 6
    n_sub = max(1, n_pairs // 2 // per_query)
    per_product = max(1, -(-n_sub // max(1, len(data.train_rows))))
    subs = title_substrings(data.titles, labels, data.train_rows, per_product, featurizer, seed + 11)
    rng.shuffle(subs)
    for q in subs[:n_sub]:
        cat = labels[q.product_row]
        cands = [q.product_row, *rng.sample(by_cat[cat], min(2, len(by_cat[cat])))]
        if sibling_cats[cat]:
            cands.append(rng.choice(by_cat[rng.choice(sibling_cats[cat])]))
        cands += [rng.randrange(n) for _ in range(per_query - len(cands))]
        add("title_substrings", q.text, cands)

    # Query texts: against two of BM25's and two of the two-tower's top 10, and four strangers.
    per_text = 8
    n_text = max(1, (n_pairs - len(rows)) // per_text)
    real = list(real_queries or [])
    real += augment_queries(real, 10 * len(real), seed + 14) if real else []
    real = real[:n_text]
    n_rest = n_text - len(real)
    n_runs = round(n_rest * runs_share)
    n_label = (n_rest - n_runs) // 2
    texts = [t for t, _ in generate_label_queries(data.labels, data.descriptions, n_label, seed + 12)]
    n_vocabulary = n_rest - n_runs - len(texts)
    texts += vocabulary_queries(vocabulary, data.labels, data.descriptions, n_vocabulary, seed + 13)
    texts = real + texts + word_runs(whole_words(vocabulary), n_runs, seed + 15)
    bm25 = BM25(data.titles)
    dense = neighbours(texts)
    for i, text in enumerate(texts):
        lexical = bm25.top_k(text, 10).tolist()
        cands = rng.sample(lexical, min(2, len(lexical))) + rng.sample(dense[i].tolist(), 2)
        cands += [rng.randrange(n) for _ in range(per_text - len(cands))]
        add(_text_source(i, len(real), len(texts) - n_runs), text, cands)
    return DistillationPairs(
        queries, np.array(group, dtype=np.int64), np.array(rows, dtype=np.int64), sources
    )


def _text_source(i: int, real: int, runs_from: int) -> str:
    if i < real:
        return "real_queries_retrieved"
    return "generated_queries_retrieved" if i < runs_from else "word_runs_retrieved"


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """A teacher's distribution at a temperature: softmax(log p / T)."""
    logits = np.log(np.clip(probs, 1e-7, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(1, keepdims=True)).astype(np.float32)


def train_text_student(
    x: np.ndarray,
    teacher_probs: np.ndarray | None,
    grades: np.ndarray,
    num_buckets: int,
    dim: int,
    hidden: int,
    epochs: int,
    temperature: float,
    soft_weight: float,
    tiered: bool,
    seed: int,
    num_grades: int = 3,
) -> TextRelevanceStudent:
    """BERT2DNN's loss on every pair: KL to the teacher's softened grades (scaled by T^2) plus the squared
    error of the expected grade (the served score) against the teacher's; hard grades where known (-1:
    unlabelled) weigh 1 - soft_weight. Without a teacher, the hard grades alone."""
    torch.manual_seed(seed)
    model = TextRelevanceStudent(num_buckets, dim, hidden, tiered, num_grades)
    xs = torch.from_numpy(x)
    y = torch.from_numpy(grades.astype(np.int64))
    values = torch.from_numpy(grade_values(num_grades).copy())
    soft = None if teacher_probs is None else torch.from_numpy(soften(teacher_probs, temperature))
    target = None if teacher_probs is None else torch.from_numpy(teacher_probs.astype(np.float32)) @ values

    def loss(idx: np.ndarray) -> torch.Tensor:
        logp = model.log_probs(xs[idx])
        labelled = y[idx] >= 0
        hard = F.nll_loss(logp[labelled], y[idx][labelled]) if bool(labelled.any()) else logp.sum() * 0
        if soft is None:
            return hard
        student_t = torch.log_softmax(logp / temperature, dim=-1)
        kl = F.kl_div(student_t, soft[idx], reduction="batchmean") * temperature**2
        mse = ((logp.exp() @ values - target[idx]) ** 2).mean()
        return soft_weight * (kl + 4.0 * mse) + (1 - soft_weight) * hard

    fit(model, len(xs), loss, epochs, 256, 3e-3, seed, "relevance (text)")
    return model


def predict(model: nn.Module, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
        )
