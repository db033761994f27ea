"""The wands part: the WANDS taxonomy bundle (`sift-train --data ../shared/data/wands-queries --output
bundles/wands`) answers the WANDS test split through the served ClassifyIntent (golden rule, then the intent
model), in-process. Issue 13 asks for top-1 >= 0.65.

Beside the student: the teacher figures the bundle's manifest recorded at training time, MiniLM zero-shot
(query against label prototypes, as training builds them) measured here on the same queries, and a BM25
floor (query against the class names). Confidence: mean top probability on queries of a known class and of
none (an empty query_class), and the expected calibration error of the served probabilities.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from server.bundle import Bundle
from training.bm25 import BM25
from training.calibration import expected_calibration_error
from training.gate import Paired, retention_interval
from training.intent import label_prototypes
from training.metrics import accuracy, bootstrap_ci, macro_f1
from training.report.context import Context
from training.report.real_common import (
    UNKNOWN,
    UNMAPPED,
    label_mapper,
    latency,
    metric_ci,
    open_bundle,
    read_rows,
    run_timed,
    services,
)
from training.teachers import SentenceTeacher, minilm_dir

QUERIES = "wands-queries/queries.tsv"


def served_probabilities(bundle: Bundle, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ClassifyIntent's probability of every label per query (a golden-rule answer is one-hot), whether the
    rule answered, and the seconds of each call (all labels asked for, no min_score)."""
    intent, _ = services(bundle)
    index = {label.id: i for i, label in enumerate(bundle.labels)}
    answers, seconds = run_timed(lambda t: intent.classify(t, len(bundle.labels), 0.0), texts)
    probs = np.zeros((len(texts), len(bundle.labels)))
    for row, answer in zip(probs, answers, strict=True):
        for c in answer.categories:
            row[index[c.id]] = c.probability
    return probs, np.array([a.source == "rule" for a in answers]), seconds


def model_latency(bundle: Bundle, texts: list[str]) -> dict[str, Any]:
    """The intent model alone, one query per call: featurize + bundle.intent.run, after a warm-up."""
    assert bundle.intent is not None
    for t in texts[:20]:
        bundle.intent.run({"ids": bundle.featurizer.batch_ids([t])})
    seconds = np.empty(len(texts))
    for i, t in enumerate(texts):
        start = time.perf_counter()
        bundle.intent.run({"ids": bundle.featurizer.batch_ids([t])})
        seconds[i] = time.perf_counter() - start
    return latency(seconds)


def top1_row(name: str, kind: str, pred: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    # A class the bundle lacks (UNMAPPED) is an error in top-1, but not a class of its own in macro-F1.
    known, mapped = gold != UNKNOWN, gold >= 0
    top1, f1 = metric_ci(accuracy, pred[known], gold[known]), metric_ci(macro_f1, pred[mapped], gold[mapped])
    return {
        "name": name,
        "kind": kind,
        "top1": top1["value"],
        "top1_ci95": top1["ci95"],
        "macro_f1": f1["value"],
        "macro_f1_ci95": f1["ci95"],
        "queries": int(known.sum()),
    }


def mean_top(probs: np.ndarray) -> dict[str, Any]:
    if len(probs) == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    top = probs.max(1)
    lo, hi = bootstrap_ci(np.mean, top)
    return {"mean": round(float(top.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(top)}


def wands_part(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    bundle = open_bundle(s.wands_bundle)
    bundle.require("intent")
    rows = read_rows(s.data_dir / QUERIES)
    to_label = label_mapper([label.path for label in bundle.labels])
    test = [r for r in rows if r["split"] == "test"]
    texts = [r["query"] for r in test]
    gold = np.array([to_label(r["query_class"]) for r in test])
    known = gold >= 0
    probs, by_rule, _ = served_probabilities(bundle, texts)
    pred = probs.argmax(1)

    table = [top1_row("student: served ClassifyIntent (rule, then intent model)", "student", pred, gold)]
    recorded = {k: v for k, v in bundle.evaluation.get("intent", {}).items() if k.startswith("teacher_")}
    teacher = SentenceTeacher(minilm_dir())
    prototypes = label_prototypes(teacher, [label.path for label in bundle.labels], {})
    zero_shot = (teacher.encode(texts, desc="MiniLM zero-shot") @ prototypes.T).argmax(1)
    table.append(top1_row("MiniLM zero-shot (query vs label prototypes)", "teacher", zero_shot, gold))
    bm25 = BM25([label.path for label in bundle.labels])
    table.append(
        top1_row(
            "BM25: query against class names",
            "floor",
            np.array([int(bm25.top_k(t, 1)[0]) for t in texts]),
            gold,
        )
    )
    # Unknown-class queries of every split: the test split alone holds too few to say anything.
    unknown_all = [r["query"] for r in rows if not r["query_class"].strip()]
    unknown_probs = served_probabilities(bundle, unknown_all)[0]
    intent_svc, _ = services(bundle)
    _, served_seconds = run_timed(lambda t: intent_svc.classify(t, 0, 0.0), texts)
    ece = expected_calibration_error(probs, gold)
    ece_lo, ece_hi = bootstrap_ci(lambda p, g: expected_calibration_error(p, g), probs, gold)
    return {
        "bundle": str(s.wands_bundle),
        "bundle_version": bundle.version,
        "labels": len(bundle.labels),
        "test_queries": len(test),
        "known_class_queries": int(known.sum()),
        "unknown_class_queries": int((gold == UNKNOWN).sum()),
        "unmapped_class_queries": int((gold == UNMAPPED).sum()),
        "answered_by_rule": int(by_rule.sum()),
        "rows": table,
        "retention_vs_zero_shot": retention_interval(
            Paired(
                "top-1 on WANDS test",
                (pred == gold)[known].astype(float),
                (zero_shot == gold)[known].astype(float),
            )
        ),
        "recorded_teacher": recorded,
        "recorded_eval": bundle.evaluation.get("intent", {}).get("eval"),
        "mean_top_probability_known": mean_top(probs[known]),
        "mean_top_probability_unknown_test": mean_top(probs[gold == UNKNOWN]),
        "mean_top_probability_unknown_all_splits": mean_top(unknown_probs),
        "ece": round(ece, 4),
        "ece_ci95": [round(ece_lo, 4), round(ece_hi, 4)],
        "latency_classify_intent": latency(served_seconds),
        "latency_intent_model": model_latency(bundle, texts),
        "target_top1": 0.65,
    }
