"""The served_relevance part: does the default bundle's served ScoreRelevance rank real queries' candidates
as the teacher it distilled does? (Issue 14: Spearman >= 0.80 with the teacher on real query text.)

The catalogue part measures relevance recipes side by side at the tiny preset's sizes; this part measures the
one bundle a user gets, at its own preset's sizes, through the server's own code (RelevanceService in this
process: golden rules, the model, corrective rules, the query model the manifest names). Its teacher is the
one its training run distilled, read from the run's stage cache (`sift-train --keep-stages`), so nothing is
retrained. Every distinct real query staged (none seen in training) is scored against two candidate sets:
- fixed: the same products, sampled once from the bundle's catalogue, for every query;
- retrieved: the products the bundle's own Search returns for it (its default mode's top 10 and dense's).
Spearman of the served scores with the teacher's expected grade, pooled over the pairs with a 95% bootstrap
interval over queries, and the mean per query.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.bundle import Bundle
from server.relevance_cascade import grade_scores
from server.service.relevance import CandidateInput, RelevanceService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits
from training.data.dataset import source_path
from training.metrics import spearman
from training.report.catalogue import auc_with_ci, read_esci_pairs, score_agreement, teacher_part_signals
from training.report.context import Context
from training.report.real_common import distinct, normalize, open_bundle, unit
from training.report.real_esci import auc_difference, bm25_pair_scores, verdict
from training.report.real_queries import embed, load_sources

log = logging.getLogger("sift.report")
FIXED_PRODUCTS = 20
"""Products in the fixed candidate set (as the catalogue part's)."""
RETRIEVED_K = 10
TARGET = 0.80


def load_teacher(stages: Path) -> Any:
    """The relevance stage's result (training/relevance.py RelevanceResult, with its teacher) from a kept
    stage cache."""
    path = stages / "relevance.pt"
    if not path.is_file():
        raise SystemExit(
            f"served_relevance: no {path}: train the bundle with `sift-train --keep-stages` and pass its "
            "stage cache with --default-stages"
        )
    return torch.load(path, weights_only=False)  # our own cache, written by training/stages.py


def candidate_sets(bundle: Bundle, queries: list[str], seed: int) -> dict[str, list[np.ndarray]]:
    """Per query, the rows of each candidate set."""
    assert bundle.products is not None
    n = len(bundle.products)
    fixed = np.sort(np.random.default_rng(seed).choice(n, min(FIXED_PRODUCTS, n), replace=False))
    search = RetrievalService(BundleStore(bundle), Limits(), cache_size=0)

    async def retrieved(query: str) -> np.ndarray:
        ids: list[str] = []
        for mode in dict.fromkeys(["", "dense"]):  # the bundle's default mode, then dense
            hits = (await search.search(query, None, RETRIEVED_K, "", mode)).hits
            ids += [h.product_id for h in hits]
        return bundle.products.row_of.rows(list(dict.fromkeys(ids)))

    async def all_retrieved() -> list[np.ndarray]:
        return [await retrieved(q) for q in queries]

    return {"fixed": [fixed for _ in queries], "retrieved": asyncio.run(all_retrieved())}


def served_scores(bundle: Bundle, queries: list[str], rows: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """ScoreRelevance's scores and grades of each query's candidates (by product id), in query order."""
    assert bundle.products is not None
    ids = bundle.products.ids
    return _score_calls(bundle, queries, [[CandidateInput(product_id=ids[int(i)]) for i in r] for r in rows])


def _score_calls(
    bundle: Bundle, queries: list[str], candidates: list[list[CandidateInput]]
) -> tuple[np.ndarray, list[str]]:
    """One ScoreRelevance per query, in process: the scores and grade names of every candidate, in order."""
    service = RelevanceService(BundleStore(bundle), Limits())

    async def go() -> tuple[list[float], list[str]]:
        scores: list[float] = []
        grades: list[str] = []
        for query, cands in zip(queries, candidates, strict=True):
            answer = (await service.score(query, cands)).scores
            scores += [s.score for s in answer]
            grades += [s.grade for s in answer]
        return scores, grades

    scores, grades = asyncio.run(go())
    return np.array(scores, dtype=np.float64), grades


def teacher_answers(
    rel: Any, queries: list[str], titles: list[str]
) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
    """The distilled teacher's parts (None for a teacher that is not a stack) and its grade probabilities."""
    if rel.stack is None:
        return None, rel.teacher_probabilities(queries, titles)
    with torch.inference_mode():
        parts = rel.stack.parts(queries, titles)
    return parts, rel.stack.combine(parts)


def esci_pairs(bundle: Bundle, rel: Any, paths: list[Path], seed: int) -> dict[str, Any]:
    """ESCI pairs files (one split, or several read as one set) against the bundle and the teacher it
    distilled: Exact against the rest, AUC with a 95% bootstrap interval over pairs, for the served
    ScoreRelevance (each title given as text, as a client sends a product the bundle does not hold), the
    teacher, each of its parts, and BM25 (statistics of the set's titles); each row's paired difference from
    BM25 (the real_esci part's test)."""
    queries: list[str] = []
    titles: list[str] = []
    flags: list[bool] = []
    labels = dict.fromkeys("ESCI", 0)
    for path in paths:
        q, t, e, n = read_esci_pairs(path)
        queries, titles, flags = queries + q, titles + t, flags + e.tolist()
        labels = {k: labels[k] + n[k] for k in labels}
    exact = np.array(flags, dtype=bool)
    served, _ = _score_calls(bundle, queries, [[CandidateInput(title=t)] for t in titles])
    parts, probs = teacher_answers(rel, queries, titles)
    teacher, student = f"teacher: {rel.teacher_name}", "served ScoreRelevance (titles as text)"
    bm25 = bm25_pair_scores(queries, titles)
    scores = {student: served, teacher: grade_scores(probs), **teacher_part_signals(parts)}
    table = {
        name: auc_with_ci(sc, exact, seed) | auc_difference(sc, bm25, exact, seed)
        for name, sc in scores.items()
    }
    for row in table.values():
        row["vs_bm25"] = verdict(row["difference_ci"])
    table["BM25 (query against the split's titles)"] = auc_with_ci(bm25, exact, seed)
    table[student]["share_of_teacher_auc"] = round(
        table[student]["auc"] / max(table[teacher]["auc"], 1e-9), 4
    )
    return {
        "file": ", ".join(str(p) for p in paths),
        "pairs": len(queries),
        "exact": int(exact.sum()),
        "labels": labels,
        "auc": table,
    }


def served_relevance_part(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    bundle = open_bundle(s.default_bundle)
    bundle.require("relevance")
    bundle.require("retrieval")
    assert bundle.products is not None
    rel = load_teacher(s.default_stages)
    by_source, missing = load_sources(s.data_dir)
    if not by_source:
        raise SystemExit(f"served_relevance: no query file found under {s.data_dir}")
    queries = distinct([t for ts in by_source.values() for t in ts])
    log.info("served_relevance: %d distinct queries, teacher %s", len(queries), rel.teacher_name)
    result: dict[str, Any] = {
        "bundle": str(s.default_bundle),
        "bundle_version": bundle.version,
        "stages": str(s.default_stages),
        "teacher": rel.teacher_name,
        "query_vector": bundle.relevance_query_vector,
        "relevance_kind": bundle.relevance_kind,
        "queries": len(queries),
        "sources": {src: len(ts) for src, ts in by_source.items()},
        "missing_files": missing,
        "target": TARGET,
        "sets": {},
    }
    titles = bundle.products.titles
    source_of = {normalize(q): src for src, ts in reversed(by_source.items()) for q in ts}
    vectors = query_vectors(bundle, queries)
    for name, rows in candidate_sets(bundle, queries, s.seed).items():
        pair_queries = [q for q, r in zip(queries, rows, strict=True) for _ in range(len(r))]
        pair_titles = [titles[int(i)] for r in rows for i in r]
        student, grades = served_scores(bundle, queries, rows)
        parts, teacher_probs = teacher_answers(rel, pair_queries, pair_titles)
        teacher = grade_scores(teacher_probs)
        # The served grade names against the teacher's most likely grade (the data's grade set, worst first).
        same = np.array(grades) == np.array(rel.grades)[teacher_probs.argmax(1)]
        starts = np.cumsum([0] + [len(r) for r in rows])
        groups = [np.arange(a, b) for a, b in itertools.pairwise(starts)]
        everyone = list(range(len(queries)))
        # How far single signals go: the teacher's own parts, and the cosine feature as served (a student
        # reading only one of them can rank no closer to the teacher than it does).
        signals = teacher_part_signals(parts)
        signals[f"served cosine feature ({bundle.relevance_query_vector})"] = served_cosine(
            bundle, vectors, rows
        )
        result["sets"][name] = {
            "pairs": len(pair_titles),
            "products_per_query": round(len(pair_titles) / len(queries), 2),
            "teacher_score_mean": round(float(teacher.mean()), 4),
            **agree(student, teacher, groups, everyone, s.seed, same),
            "by_source": {
                src: {"queries": len(chosen), **agree(student, teacher, groups, chosen, s.seed, same)}
                for src in by_source
                if (chosen := [i for i, q in enumerate(queries) if source_of[normalize(q)] == src])
            },
            "signals": {
                n: agree(np.asarray(v, np.float64), teacher, groups, everyone, s.seed)
                for n, v in signals.items()
            },
        }
    folder = s.data_dir / "esci-pairs"
    if (folder / "pairs_test.csv").is_file():
        result["esci_pairs_test"] = esci_pairs(bundle, rel, [folder / "pairs_test.csv"], s.seed)
        # A bundle that never trained on these pairs can be measured on all of them: five times the test
        # split's 32 pairs, for intervals half as wide.
        splits = [folder / f"pairs_{n}.csv" for n in ("train", "dev", "test")]
        if all(p.is_file() for p in splits) and not trained_on(bundle, folder):
            result["esci_pairs_all"] = esci_pairs(bundle, rel, splits, s.seed)
    return result


def trained_on(bundle: Bundle, folder: Path) -> bool:
    """Whether the bundle's training data (the manifest's training.data, as training/data/dataset.py writes
    it) was `folder` or a file in it."""
    used = source_path(str(bundle.manifest.training.get("data", "")))
    if used is None:
        return False
    used, here = used.resolve(), folder.resolve()
    return used == here or here in used.parents


def agree(
    scores: np.ndarray,
    teacher: np.ndarray,
    groups: list[np.ndarray],
    chosen: list[int],
    seed: int,
    same_grade: np.ndarray | None = None,
) -> dict[str, Any]:
    """score_agreement over the queries `chosen` (each query's pairs are `groups[q]`); every query is unseen
    by the default bundle's training, so there is no separate unseen figure. The pooled Spearman mixes two
    things, so both are given apart: how the queries' mean scores agree (`spearman_query_means`), and the
    pooled Spearman once each query's scores are shifted to the teacher's mean for that query
    (`spearman_pooled_teacher_means`: what a student with exactly the teacher's per-query level would get)."""
    subset = [groups[i] for i in chosen]
    out = score_agreement(scores, teacher, subset, np.zeros(len(subset), bool), seed, same_grade)
    means = np.array([[scores[g].mean(), teacher[g].mean()] for g in subset])
    shifted = scores.copy()
    for g, (mine, theirs) in zip(subset, means, strict=True):
        shifted[g] += theirs - mine
    pairs = np.concatenate(subset)
    out["spearman_query_means"] = round(spearman(means[:, 0], means[:, 1]), 4)
    out["spearman_pooled_teacher_means"] = round(spearman(shifted[pairs], teacher[pairs]), 4)
    return out


def query_vectors(bundle: Bundle, queries: list[str]) -> np.ndarray:
    """The queries' unit vectors from the model that ScoreRelevance's cosine feature reads."""
    model, featurize = bundle.relevance_query_model()
    return unit(embed(model, featurize, queries))


def served_cosine(bundle: Bundle, vectors: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    """ScoreRelevance's cosine feature of each query's candidate `rows`, concatenated: the query's vector
    (query_vectors) against the product's title vector."""
    assert bundle.index is not None
    return np.concatenate([unit(bundle.index.vectors(r)) @ v for v, r in zip(vectors, rows, strict=True)])
