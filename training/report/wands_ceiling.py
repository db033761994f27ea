"""The wands_ceiling part: how far the teachers available here go on WANDS intent (issue 13's target: top-1
>= 0.65 on the test split). Every signal a teacher gives for a real query's class, for each label:

- MiniLM and mpnet cosine to the label prototypes (zero-shot), and to prototypes moved toward the labelled
  training queries of their class (few-shot), as the intent teachers build them;
- BM25 of the query against the label's name and path.

Each alone, then linear stacks of them (each signal z-scored per query over the labels, weights from a
grid): the stack whose weights are chosen on dev, as a teacher would be, and the best stack on the test
split itself. The last has seen the answers: it is not a model but a ceiling for every such stack.

Then the same with every labelled query that is not test (train and dev) among the few-shot prototypes, as
a teacher refitted on all of them would be built, its weights chosen on those queries leave-one-out (each
scored against prototypes built without it), so no choice sees the test split.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from training.bm25 import BM25
from training.intent import (
    PROTOTYPE_SCALE,
    few_shot_prototypes,
    label_prompts,
    label_prototypes,
    shot_prototypes,
)
from training.report.context import Context
from training.report.real_common import mean_ci
from training.teachers import SentenceTeacher, teacher_dir

log = logging.getLogger("sift.report")
SPLITS = ("train", "dev", "test")
WEIGHTS = (0.0, 0.5, 1.0, 2.0)
"""Each signal's weight in a stack (z-scored signals, so the weights are comparable)."""
TARGET = 0.65
REFIT = ("train", "dev")
"""The splits whose labelled queries the refitted few-shot prototypes are built from."""


def _z(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(1, keepdims=True)) / np.maximum(scores.std(1, keepdims=True), 1e-9)


def _correct(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per query of a known class: whether the best-scored label is its class."""
    known = gold >= 0
    return (scores[known].argmax(1) == gold[known]).astype(np.float64)


def stacks(
    signals: dict[str, dict[str, np.ndarray]],
    gold: dict[str, np.ndarray],
    weights: tuple[float, ...] = WEIGHTS,
    choose: str = "dev",
) -> dict[str, Any]:
    """Every weighting of the z-scored signals (not all zero): the one with the best top-1 on the `choose`
    split (ties: the fewest signals, then the grid's order) and the one with the best test top-1, with their
    weights and their top-1 on both splits."""
    names = list(signals)
    splits = (choose, "test")
    z = {name: {split: _z(by_split[split]) for split in splits} for name, by_split in signals.items()}
    tried = []
    for w in itertools.product(weights, repeat=len(names)):
        if not any(w):
            continue
        acc = {}
        for split in splits:
            stacked = sum(wi * z[n][split] for wi, n in zip(w, names, strict=True) if wi)
            acc[split] = _correct(stacked, gold[split])
        tried.append((dict(zip(names, w, strict=True)), acc))

    def pick(split: str) -> dict[str, Any]:
        weights_, acc = max(tried, key=lambda t: (t[1][split].mean(), -sum(v > 0 for v in t[0].values())))
        return {"weights": weights_, **{s: mean_ci(acc[s]) for s in splits}}

    return {"stacks_tried": len(tried), "chosen": pick(choose), "ceiling_on_test": pick("test")}


def leave_one_out_shots(prototypes: np.ndarray, vecs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """PROTOTYPE_SCALE x each labelled query's cosine to few-shot prototypes built from every other labelled
    query (`gold` >= 0 throughout): its score when it is not among the shots."""
    scores = np.empty((len(vecs), len(prototypes)), dtype=np.float32)
    for i in range(len(vecs)):
        others = np.arange(len(vecs)) != i
        scores[i] = PROTOTYPE_SCALE * vecs[i] @ shot_prototypes(prototypes, vecs[others], gold[others]).T
    return scores


def _alone(signals: dict[str, dict[str, np.ndarray]], gold: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"signal": name, **{split: mean_ci(_correct(s, gold[split])) for split, s in by_split.items()}}
        for name, by_split in signals.items()
    ]


def wands_ceiling_part(ctx: Context) -> dict[str, Any]:
    data, _ = ctx.real()
    texts, gold = {}, {}
    for split in SPLITS:
        texts[split], gold[split] = data.real(split)
    pool = [(t, g) for split in REFIT for t, g in zip(texts[split], gold[split], strict=True) if g >= 0]
    pool_texts, pool_gold = [t for t, _ in pool], np.array([g for _, g in pool], dtype=np.int64)
    signals: dict[str, dict[str, np.ndarray]] = {}
    refit: dict[str, dict[str, np.ndarray]] = {}
    for name in ctx.settings.teachers:
        encoder = SentenceTeacher(teacher_dir(name))
        prototypes = label_prototypes(encoder, data.labels, data.descriptions)
        shots = few_shot_prototypes(encoder, prototypes, texts["train"], gold["train"])
        vectors = {split: encoder.encode(texts[split], desc=f"{name}: {split}") for split in ("dev", "test")}
        signals[f"{name} zero-shot"] = {s: PROTOTYPE_SCALE * v @ prototypes.T for s, v in vectors.items()}
        if shots is not None:
            signals[f"{name} few-shot"] = {s: PROTOTYPE_SCALE * v @ shots.T for s, v in vectors.items()}
        pool_vecs = encoder.encode(pool_texts, desc=f"{name}: {' and '.join(REFIT)}")
        refit[f"{name} zero-shot"] = {
            "pool": PROTOTYPE_SCALE * pool_vecs @ prototypes.T,
            "test": signals[f"{name} zero-shot"]["test"],
        }
        refit[f"{name} few-shot"] = {
            "pool": leave_one_out_shots(prototypes, pool_vecs, pool_gold),
            "test": PROTOTYPE_SCALE * vectors["test"] @ shot_prototypes(prototypes, pool_vecs, pool_gold).T,
        }
    bm25 = BM25([" ".join(p) for p in label_prompts(data.labels, data.descriptions)])
    signals["BM25 against label names"] = {
        s: np.stack([bm25.scores(t) for t in texts[s]]) for s in ("dev", "test")
    }
    refit["BM25 against label names"] = {
        "pool": np.stack([bm25.scores(t) for t in pool_texts]),
        "test": signals["BM25 against label names"]["test"],
    }
    log.info("wands_ceiling: %d signals, %d labels", len(signals), len(data.labels))
    refit_gold = {"pool": pool_gold, "test": gold["test"]}
    return {
        "labels": len(data.labels),
        "queries": {s: int((gold[s] >= 0).sum()) for s in ("dev", "test")},
        "target": TARGET,
        "alone": _alone(signals, gold),
        **stacks(signals, gold),
        "refit": {
            "splits": list(REFIT),
            "queries": len(pool_texts),
            "alone": _alone(refit, refit_gold),
            **stacks(refit, refit_gold, choose="pool"),
        },
    }
