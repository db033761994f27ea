"""The catalogue part: retrieval (two-tower, views, BM25) and relevance (cross-encoder teacher, tiered
student, rules) on held-out products, and teacher-student agreement on the real query text."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.featurize import (
    RELEVANCE_FEATURES,
    Featurizer,
    FeaturizerConfig,
    RelevanceColumn,
    title_lexicon_arrays,
)
from server.relevance_cascade import cascade, grade_scores
from training.bm25 import BM25
from training.data.dataset import load_training_data
from training.export import export_onnx, quantize_int8, run_onnx
from training.intent import (
    build_intent_sets,
    train_intent_student,
    train_intent_teacher,
)
from training.metrics import (
    bootstrap_ci,
    mrr,
    overlap_at_k,
    recall_at_k,
    spearman,
)
from training.presets import PRESETS
from training.query_student import FILE as QUERY_STUDENT_FILE
from training.query_student import distillation_set, encode_onnx, export_query_student
from training.relevance import Pairs, export_relevance, text_pair_features, train_relevance
from training.relevance_stack import CROSS_ENCODER, WORD_MATCH
from training.report.context import Context
from training.retrieval import (
    encode_queries,
    evaluate_retrieval,
    exact_top,
    train_query_encoder,
    train_retrieval,
    write_index,
)
from training.static_student import FILE as STATIC_FILE
from training.static_student import export_static_student, train_static_student
from training.students import num_parameters
from training.teachers import SentenceTeacher, minilm_dir, teacher_dir


def catalogue_part(ctx: Context) -> dict[str, Any]:
    """Held-out products of the embedded catalogue (JD protocol) for labelled retrieval and relevance, and
    agreement on real query text (which needs no labels)."""
    preset = PRESETS[ctx.settings.catalogue_preset]
    f = Featurizer(minilm_dir() / "tokenizer.json", FeaturizerConfig(num_buckets=preset.num_buckets))
    data = load_training_data(None, preset.num_products, preset.heldout_fraction, ctx.seed)
    real_data, _ = ctx.real()
    real_texts = [q.text for q in real_data.queries]
    out = ctx.work / "catalogue"
    out.mkdir(exist_ok=True)
    result: dict[str, Any] = {"products": len(data.titles), "heldout_products": len(data.heldout_rows)}

    # Intent model over the catalogue's categories (relevance features need it).
    sets = build_intent_sets(data, preset, f, ctx.seed)
    teacher = train_intent_teacher("minilm", data, sets, preset, ctx.seed)
    student, _ = train_intent_student(sets, teacher.train_logits, f, len(data.labels), preset, ctx.seed)
    ids = f.batch_ids(sets.eval_texts[:2])
    export_onnx(student, torch.from_numpy(ids), "ids", "probabilities", out / "intent_fp32.onnx")
    quantize_int8(out / "intent_fp32.onnx", out / "intent.onnx")

    # Retrieval: the product side by each teacher; the student trained into that space.
    retrieval_rows = []
    bm25 = None
    shipped = None
    for product_teacher in ctx.settings.teachers:
        # The relevance cosine's query model is pinned to the hashed encoder here and below: the part trains
        # each other query model's student itself (COSINE_TRAINED), so retrieval need not build one, and the
        # "shipped" row stays the hashed-encoder recipe whatever the preset's default and whatever query
        # model files an earlier run left in `out`.
        variant = replace(
            preset,
            methods=replace(
                preset.methods, product_teacher=product_teacher, views=2, relevance_cosine="query_encoder"
            ),
        )
        r = train_retrieval(data, f, variant, ctx.seed)
        student_vecs = encode_queries(r.encoder, f, r.eval_texts)
        for views in (1, 2):
            m = evaluate_retrieval(
                r.eval_targets, r.eval_teacher_vecs, student_vecs, r.product_vecs[:, :views]
            )
            m["retention"] = round(m["student_recall_at_10"] / max(m["teacher_recall_at_10"], 1e-9), 4)
            retrieval_rows.append(
                {
                    "product_teacher": product_teacher,
                    "views": views,
                    "student_parameters": num_parameters(r.encoder),
                    **m,
                }
            )
        # Agreement on real query text: teacher and student query vectors, and their top 10 products.
        big = SentenceTeacher(teacher_dir(product_teacher))
        t_real = big.encode(real_texts, desc="teacher: real queries")
        s_real = encode_queries(r.encoder, f, real_texts)
        result[f"real_query_agreement_{product_teacher}"] = {
            "queries": len(real_texts),
            "mean_cosine": round(float((t_real * s_real).sum(1).mean()), 4),
            "overlap_at_10": round(
                overlap_at_k(exact_top(t_real, r.product_vecs), exact_top(s_real, r.product_vecs)), 4
            ),
        }
        if bm25 is None:
            bm25 = BM25(data.titles)
            top = np.stack([bm25.top_k(t, 10) for t in r.eval_texts])
            retrieval_rows.append(
                {
                    "product_teacher": "BM25 over titles",
                    "views": 1,
                    "recall_at_10": round(recall_at_k(top, r.eval_targets, 10), 4),
                    "mrr": round(mrr(top, r.eval_targets), 4),
                }
            )
        shipped = r
    no_pairs = replace(
        preset, methods=replace(preset.methods, substrings=False, product_teacher=ctx.settings.teachers[-1])
    )
    result["retrieval"] = retrieval_rows
    # The same teacher vectors; only the student's training changes.
    encoder_np, _ = train_query_encoder(
        shipped.train_queries,
        shipped.train_targets,
        shipped.product_vecs,
        data.titles,
        f,
        no_pairs,
        ctx.seed,
        shipped.general,
    )
    m = evaluate_retrieval(
        shipped.eval_targets,
        shipped.eval_teacher_vecs,
        encode_queries(encoder_np, f, shipped.eval_texts),
        shipped.product_vecs,
    )
    result["retrieval_without_substring_pairs"] = m

    # Relevance on the shipped two-tower (the last teacher, 2 views).
    # The relevance teacher stacks the cross-encoder with the report's bi-encoders (MiniLM, and mpnet when
    # --teachers names it).
    variant = replace(
        preset,
        methods=replace(
            preset.methods,
            product_teacher=ctx.settings.teachers[-1],
            views=2,
            teachers=tuple(ctx.settings.teachers),
            relevance_cosine="query_encoder",
        ),
        relevance_distill_pairs=ctx.settings.relevance_distill_pairs,
    )
    ids = f.batch_ids(shipped.eval_texts[:2])
    export_onnx(shipped.encoder, torch.from_numpy(ids), "ids", "embedding", out / "encoder_fp32.onnx")
    quantize_int8(out / "encoder_fp32.onnx", out / "query_encoder.onnx")
    write_index(shipped.product_vecs, out / "index.usearch")
    # Real training queries (and augmented copies) join the unlabelled pairs; the agreement below is also
    # given on the real queries that never entered training.
    real_train = real_data.real("train")[0]
    rel = train_relevance(data, f, out, shipped, variant, ctx.seed, real_queries=real_train)
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    main, rules, _ = export_relevance(rel, out, tmp, variant)
    result["relevance"] = {"shipped": main}
    served = {"shipped": (out / "relevance.onnx").rename(out / "relevance_shipped.onnx"), "kinds": {}}
    served["kinds"]["shipped"] = rel.kind
    served["rules"] = {"shipped": rules}
    # The shipped retrieval's transformer query student (int8, as Search serves it), for the students whose
    # cosine feature takes the query's vector from it.
    query_vectors: dict[str, np.ndarray] = {}
    if shipped.query_student is not None and shipped.query_tokenizer is not None:
        export_query_student(shipped.query_student, shipped.query_tokenizer, real_texts[:256], tmp, out)
        query_vectors["query_student"] = encode_onnx(out / QUERY_STUDENT_FILE, real_texts)
    # The static word-piece model, tuned on the query student's distillation set, for the students whose
    # cosine feature takes the query's vector from it.
    if shipped.general is not None and shipped.train_targets is not None:
        texts, targets = distillation_set(
            data,
            [q.text for q in shipped.train_queries],
            shipped.product_vecs[:, 0],
            lambda texts: np.zeros(0),  # unused: the substrings' and general texts' vectors are given
            variant,
            ctx.seed,
            shipped.train_targets,
            shipped.general,
        )
        static, _, _ = train_static_student(
            minilm_dir(), texts, targets, variant.query_static_epochs, ctx.seed
        )
        export_static_student(static, real_texts[:256], tmp, out)
        query_vectors["query_static"] = encode_onnx(out / STATIC_FILE, real_texts)
    ablations = _relevance_ablations(rel, variant, ctx.seed)
    if rel.kind == "text_mlp" and rel.distill_pairs is not None:
        for source, name in COSINE_TRAINED.items():
            if source in query_vectors:
                ablations.append((name, *_student_cosine(rel, variant, f, out, data, ctx.seed, source)))
    served["cosine"] = {"shipped": rel.cosine}
    for name, v, trained in ablations:
        ablation, ablation_rules, _ = export_relevance(trained, out, tmp, v)
        result["relevance"][name] = ablation
        served[name] = (out / "relevance.onnx").rename(out / f"relevance_{len(served)}.onnx")
        served["kinds"][name] = trained.kind
        served["rules"][name] = ablation_rules
        served["cosine"][name] = trained.cosine

    # Relevance agreement on real query text (no labels needed): a fixed set of 20 catalogue products for
    # every real query, and the products retrieval returns for it (BM25's and the two-tower's top 10).
    if rel.teacher is not None:
        result["real_query_relevance_agreement"] = {}
        fixed = np.random.default_rng(ctx.seed).choice(len(data.titles), 20, replace=False)
        dense = exact_top(encode_queries(shipped.encoder, f, real_texts), shipped.product_vecs, 10)
        bm25_titles = BM25(data.titles)
        candidate_sets = {
            "fixed": [fixed for _ in real_texts],
            "retrieved": [
                np.array(list(dict.fromkeys([*bm25_titles.top_k(t, 10).tolist(), *dense[i].tolist()])))
                for i, t in enumerate(real_texts)
            ],
        }
        for set_name, cands in candidate_sets.items():
            pairs = Pairs(
                real_texts,
                np.concatenate([np.full(len(c), g) for g, c in enumerate(cands)]),
                np.concatenate(cands),
                [data.titles[i] for i in np.concatenate(cands)],
                np.zeros(sum(len(c) for c in cands), dtype=np.int64),
            )
            result["real_query_relevance_agreement"][set_name] = real_query_agreement(
                pairs, rel, served, f, out, data, ctx.seed, set(real_train), query_vectors
            )
        esci = ctx.settings.data_dir / "esci-pairs" / "pairs_test.csv"
        esci_pairs = read_esci_pairs(esci) if esci.is_file() else None
        if esci_pairs is not None:
            result["esci_pairs_test"] = esci_pairs_auc(esci, esci_pairs, rel, served, f, out, ctx.seed)
        if rel.stack is not None:
            result["relevance_teachers"] = relevance_teachers(rel, esci_pairs, ctx.seed)
    return result


STUDENT_COSINE = "shipped, cosine feature from the transformer query student"
"""The shipped relevance student scored with its query vector from the retrieval's transformer query student
(serve-time only: it was trained on the hashed encoder's cosines)."""
STUDENT_COSINE_TRAINED = "text, cosine feature from the transformer query student (trained and served)"
"""The shipped student's recipe with its cosine feature taking the query's vector from the retrieval's
transformer query student in training too (Preset.methods.relevance_cosine "query_student")."""
STATIC_COSINE_TRAINED = "text, cosine feature from the static word-piece model (trained and served)"
"""The same with the static word-piece model's vector (relevance_cosine "query_static")."""
COSINE_TRAINED = {"query_student": STUDENT_COSINE_TRAINED, "query_static": STATIC_COSINE_TRAINED}
SIGNAL_NAMES = {
    "query_encoder": "served cosine feature, hashed query encoder",
    "query_student": "served cosine feature, transformer query student",
    "query_static": "served cosine feature, static word-piece model",
}


def _student_cosine(
    rel: Any, variant: Any, f: Featurizer, out: Path, data: Any, seed: int, source: str
) -> tuple[Any, Any]:
    """(preset, RelevanceResult): the shipped student's pairs, teacher answers and recipe, its features
    (labelled and unlabelled pairs alike) recomputed with the cosine from query model `source` (a
    relevance_cosine other than the encoder), and the student trained again on them."""
    from server.runtime.index import ProductIndex
    from training.relevance import fit_text_student, relevance_query_vectors

    v = replace(variant, methods=replace(variant.methods, relevance_cosine=source))
    cosine, vectors = relevance_query_vectors(v, out)
    index = ProductIndex(out / "index.usearch", v.methods.views)
    lexicon = title_lexicon_arrays(data.titles, f)

    def rows(p: Pairs, pair_seed: int) -> Any:
        feats, x = text_pair_features(
            p, f, out, index, data.product_labels, lexicon, pair_seed, vectors(p.queries)
        )
        return replace(feats, model_input=x)

    feats = {name: rows(p, seed) for name, p in (("train", rel.train), ("dev", rel.dev), ("eval", rel.eval))}
    distill_x = rows(rel.distill_pairs, seed + 5).model_input
    head = fit_text_student(
        feats["train"].model_input,
        rel.train.grades,
        rel.teacher_train_probs,
        distill_x,
        rel.distill_probs,
        v,
        seed,
        num_grades=len(rel.grades),
    )
    return v, replace(rel, head=head, features=feats, distill_x=distill_x, cosine=cosine)


TEACHER_NAMES = {
    CROSS_ENCODER: "cross-encoder",
    "minilm": "MiniLM cosine",
    "mpnet": "mpnet cosine",
    WORD_MATCH: "query words in the title",
}


def read_esci_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray, dict[str, int]]:
    """(queries, titles, is Exact, label counts) of an ESCI pairs file; read where it lies, never copied."""
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    exact = np.array([r["esci_label"] == "E" for r in rows])
    labels = {k: sum(r["esci_label"] == k for r in rows) for k in "ESCI"}
    return [r["query"] for r in rows], [r["product_title"] for r in rows], exact, labels


def auc_with_ci(scores: np.ndarray, exact: np.ndarray, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(roc_auc, scores, exact, n=1000, seed=seed)
    return {"auc": round(roc_auc(scores, exact), 4), "auc_ci": [round(lo, 4), round(hi, 4)]}


def relevance_teachers(
    rel: Any, esci: tuple[list[str], list[str], np.ndarray, dict[str, int]] | None, seed: int
) -> dict[str, Any]:
    """Each relevance teacher alone and stacked: on the held-out synthetic pairs (nDCG@10 and grade
    accuracy) and, where the data is, on the ESCI pairs test split (Exact against the rest, AUC with a 95%
    bootstrap interval over pairs). A teacher "through the stacker" is a logistic regression over its
    features alone, fitted on the dev pairs as the stacked teacher is, so a gain of the stack over the
    cross-encoder is not only recalibration; the raw rows score by the teacher's own output."""
    from training.relevance import evaluate_ranking
    from training.relevance_stack import GradeStacker, alone_and_stacked, stack_features

    parts = rel.teacher_parts
    dev, ev = parts["dev"], parts["eval"]
    with torch.inference_mode():
        real = rel.stack.parts(esci[0], esci[1]) if esci is not None else None
    # name -> (eval scores, eval grades or None, ESCI scores or None)
    scored: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
    ce = CROSS_ENCODER
    scored["cross-encoder, raw (its own probabilities)"] = (
        grade_scores(ev[ce]),
        ev[ce].argmax(1),
        grade_scores(real[ce]) if real is not None else None,
    )
    for name in rel.stack.names[1:]:  # the bi-encoders' cosines and the word share
        scored[f"{TEACHER_NAMES[name]}, raw"] = (ev[name], None, real[name] if real is not None else None)
    for label, names in alone_and_stacked(rel.stack.names).items():
        stacker = GradeStacker.fit(stack_features(dev, names), rel.dev.grades, len(rel.grades))
        p = stacker.probabilities(stack_features(ev, names))
        real_p = stacker.probabilities(stack_features(real, names)) if real is not None else None
        what = " + ".join(TEACHER_NAMES[n] for n in names)
        key = f"stacked: {what}" if label == "stacked" else f"{what}, through the stacker"
        scored[key] = (grade_scores(p), p.argmax(1), grade_scores(real_p) if real_p is not None else None)
    # What the stack leans on: per standard deviation of each feature, the log-odds of the best grade over
    # the worst (the stacker's weights are only defined up to a shift across grades; this contrast is not).
    w = rel.stack.stacker.weight
    features = [f"cross-encoder log p({g})" for g in rel.grades]
    features += [TEACHER_NAMES[n] for n in rel.stack.names[1:]]
    weights = {n: round(float(w[i, -1] - w[i, 0]), 3) for i, n in enumerate(features)}
    rows = []
    for name, (score, grades, real_score) in scored.items():
        row: dict[str, Any] = {"teacher": name, **evaluate_ranking(rel.eval, score, grades, rel.grades)}
        if real_score is not None and esci is not None:
            row["esci"] = auc_with_ci(real_score, esci[2], seed)
        rows.append(row)
    return {
        "dev_pairs": len(rel.dev.titles),
        "eval_pairs": len(rel.eval.titles),
        "distilled": rel.teacher_name,
        "esci_pairs": len(esci[0]) if esci is not None else 0,
        "stack_log_odds_best_over_worst_per_sd": weights,
        "rows": rows,
    }


def _relevance_ablations(rel: Any, variant: Any, seed: int) -> list[tuple[str, Any, Any]]:
    """Each relevance method against its absence: (name, preset, RelevanceResult with that student)."""
    from training.relevance import fit_text_student, train_relevance_head

    four = len(RELEVANCE_FEATURES)
    teacher = rel.teacher_train_probs
    out = [
        (
            "features only: MLP over the four numbers (the previous student)",
            replace(variant, methods=replace(variant.methods, relevance_student="features")),
            replace(
                rel,
                kind="feature_mlp",
                head=train_relevance_head(
                    rel.features["train"].model_input[:, :four],
                    rel.train.grades,
                    teacher,
                    variant,
                    seed,
                    len(rel.grades),
                ),
            ),
        )
    ]
    if rel.kind != "text_mlp":
        return out
    x, grades = rel.features["train"].model_input, rel.train.grades

    def text(name: str, v: Any, **kw: Any) -> None:
        args = {"teacher": teacher, "distill_x": rel.distill_x, "distill_probs": rel.distill_probs} | kw
        head = fit_text_student(
            x,
            grades,
            args["teacher"],
            args["distill_x"],
            args["distill_probs"],
            v,
            seed,
            kw.get("temperature"),
            len(rel.grades),
        )
        out.append((name, v, replace(rel, head=head)))

    text(
        "text, without the unlabelled pairs (labelled pairs only)",
        variant,
        distill_x=None,
        distill_probs=None,
    )
    if rel.stack is not None and "distill" in rel.teacher_parts:
        # The previous teacher: the cross-encoder's own probabilities on the same pairs.
        ce = {k: v[CROSS_ENCODER] for k, v in rel.teacher_parts.items()}
        v = replace(variant, methods=replace(variant.methods, relevance_teacher="cross_encoder"))
        head = fit_text_student(
            x, grades, ce["train"], rel.distill_x, ce["distill"], v, seed, num_grades=len(rel.grades)
        )
        out.append(
            (
                "text, distilled from the cross-encoder alone (the previous teacher)",
                v,
                replace(
                    rel,
                    head=head,
                    teacher_eval_probs=ce["eval"],
                    teacher_train_probs=ce["train"],
                    distill_probs=ce["distill"],
                    teacher_name="cross-encoder",
                    stack=None,
                ),
            )
        )
    text(
        "text, without the teacher's soft labels (hard grades only)",
        replace(variant, methods=replace(variant.methods, soft_labels=False)),
        distill_x=None,
        distill_probs=None,
    )
    text("text, flat 3-way head", replace(variant, methods=replace(variant.methods, tiered_relevance=False)))
    for t in sorted({1.0, 2.0, 4.0} - {variant.relevance_temperature}):
        text(f"text, temperature {t:g} (shipped {variant.relevance_temperature:g})", variant, temperature=t)
    out.append(("text, without rules", replace(variant, methods=replace(variant.methods, rules=False)), rel))
    return out


def real_query_agreement(
    pairs: Pairs,
    rel: Any,
    served: dict[str, Any],
    f: Featurizer,
    out: Path,
    data: Any,
    seed: int,
    trained: set[str] = frozenset(),
    query_vectors: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Spearman of each served student's scores (the whole cascade, int8) with the cross-encoder teacher's
    expected grade, pooled over all pairs with a 95% bootstrap interval over queries, and mean per query;
    over every query and over the queries not in `trained` (the real queries the students learned from).
    `query_vectors`: each query's vector from the other query models (relevance_cosine names), for the
    students trained on their cosine; with the transformer query student's, the shipped student once more
    with its cosine feature computed from them instead of the hashed encoder's. `signals`: the
    same measures for single signals, the stacked teacher's own parts and the served cosine feature."""
    from server.runtime.index import ProductIndex

    index = ProductIndex(out / "index.usearch", 2)
    lexicon = title_lexicon_arrays(data.titles, f)

    def features(query_vectors: np.ndarray | None) -> tuple[Any, np.ndarray]:
        return text_pair_features(pairs, f, out, index, data.product_labels, lexicon, seed, query_vectors)

    # (row name, kind, the served model it scores with, its features)
    by_source = {"query_encoder": features(None)}
    by_source |= {source: features(v) for source, v in (query_vectors or {}).items()}
    cosine = served.get("cosine", {})
    runs = [
        (name, kind, name, by_source[cosine.get(name, "query_encoder")])
        for name, kind in served["kinds"].items()
    ]
    if "query_student" in by_source:
        runs.append((STUDENT_COSINE, served["kinds"]["shipped"], "shipped", by_source["query_student"]))
    queries = [pairs.queries[g] for g in pairs.group]
    with torch.inference_mode():
        parts = rel.stack.parts(queries, pairs.titles) if rel.stack is not None else None
    t = rel.stack.combine(parts) if parts is not None else rel.teacher_probabilities(queries, pairs.titles)
    teacher_scores = grade_scores(t)
    result: dict[str, Any] = {
        "teacher": rel.teacher_name,
        "queries": len(pairs.queries),
        "pairs": len(pairs.titles),
        "teacher_score_mean": round(float(teacher_scores.mean()), 4),
        "teacher_grade_shares": (np.bincount(t.argmax(1), minlength=t.shape[1]) / len(t)).round(4).tolist(),
        "students": {},
    }
    groups = [np.flatnonzero(pairs.group == g) for g in range(len(pairs.queries))]
    unseen = np.array([q not in trained for q in pairs.queries])
    result["unseen_queries"] = int(unseen.sum())
    for name, kind, model, (feats, text_x) in runs:
        x = text_x if kind == "text_mlp" else text_x[:, : len(RELEVANCE_FEATURES)]
        probs = run_onnx(served[model], "relevance", "features", x)
        verdicts = cascade(served["rules"][model], replace(feats, model_input=x), probs)
        scores = verdicts.scores
        result["students"][name] = {"kind": kind} | score_agreement(
            scores, teacher_scores, groups, unseen, seed, t.argmax(1) == verdicts.grades
        )
    # How far single signals go toward the teacher's ranking: each of its own parts, and the cosine feature
    # as the students read it (a student that is any rising function of one of these scores the same).
    signals = teacher_part_signals(parts)
    cos = RelevanceColumn.COSINE
    for source, (_, text_x) in by_source.items():
        signals[SIGNAL_NAMES[source]] = text_x[:, cos]
    result["signals"] = {
        name: score_agreement(np.asarray(s, np.float64), teacher_scores, groups, unseen, seed)
        for name, s in signals.items()
    }
    return result


def teacher_part_signals(parts: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Each part of a stacked teacher as a score per pair: a grade distribution as its expected grade, a
    cosine as itself."""
    return {
        f"teacher part: {TEACHER_NAMES[part]}": grade_scores(answer) if answer.ndim == 2 else answer
        for part, answer in (parts or {}).items()
    }


def score_agreement(
    scores: np.ndarray,
    teacher_scores: np.ndarray,
    groups: list[np.ndarray],
    unseen: np.ndarray,
    seed: int,
    same_grade: np.ndarray | None = None,
) -> dict[str, Any]:
    """Spearman of `scores` with the teacher's over all pairs (95% bootstrap interval over queries) and mean
    per query, for every query and for the `unseen` ones; with `same_grade` (per pair), the share of pairs
    where the grades agree."""
    per_query = np.array([spearman(scores[i], teacher_scores[i]) for i in groups])

    def pooled(sample: np.ndarray) -> float:
        idx = np.concatenate([groups[int(g)] for g in sample])
        return spearman(scores[idx], teacher_scores[idx])

    out: dict[str, Any] = {}
    for key, chosen in (("", np.arange(len(groups))), ("unseen_", np.flatnonzero(unseen))):
        if not len(chosen):
            continue
        lo, hi = bootstrap_ci(pooled, chosen, n=200, seed=seed)
        out |= {
            f"{key}spearman_pooled": round(pooled(chosen), 4),
            f"{key}spearman_pooled_ci": [round(lo, 4), round(hi, 4)],
            f"{key}spearman_mean_per_query": round(float(np.nanmean(per_query[chosen])), 4),
        }
        if same_grade is not None:
            idx = np.concatenate([groups[int(g)] for g in chosen])
            out[f"{key}grade_agreement"] = round(float(np.mean(same_grade[idx])), 4)
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def esci_pairs_auc(
    path: Path,
    pairs: tuple[list[str], list[str], np.ndarray, dict[str, int]],
    rel: Any,
    served: dict[str, Any],
    f: Featurizer,
    out: Path,
    seed: int,
) -> dict[str, Any]:
    """Real Amazon (query, product title, ESCI label) pairs: Exact against the rest, as AUC with a 95%
    bootstrap interval over pairs, for the teacher the students distilled, each served student (by title,
    as a client would send an unknown product) and BM25 (each query against the split's titles)."""
    from training.relevance import QUERY_MODEL_FILES, title_pair_features

    queries, titles, exact, labels = pairs
    models = (f, out / "intent.onnx", out / "query_encoder.onnx")
    cosine = served.get("cosine", {})
    by_source = {"query_encoder": title_pair_features(queries, titles, *models)}
    for source in set(cosine.values()) - {"query_encoder"}:
        vectors = encode_onnx(out / QUERY_MODEL_FILES[source], queries)
        by_source[source] = title_pair_features(queries, titles, *models, vectors)
    teacher = grade_scores(rel.teacher_probabilities(queries, titles))
    bm25 = BM25(titles)
    scores = {
        f"teacher: {rel.teacher_name}": teacher,
        "BM25 (query against the split's titles)": np.array(
            [bm25.scores(q)[i] for i, q in enumerate(queries)]
        ),
    }
    for name, kind in served["kinds"].items():
        feats, text_x = by_source[cosine.get(name, "query_encoder")]
        x = text_x if kind == "text_mlp" else text_x[:, : len(RELEVANCE_FEATURES)]
        probs = run_onnx(served[name], "relevance", "features", x)
        scores[f"student: {name}"] = cascade(
            served["rules"][name], replace(feats, model_input=x), probs
        ).scores
    table = {name: auc_with_ci(sc, exact, seed) for name, sc in scores.items()}
    teacher_auc = table[f"teacher: {rel.teacher_name}"]["auc"]
    for name, row in table.items():
        if name.startswith("student: "):
            row["share_of_teacher_auc"] = round(row["auc"] / max(teacher_auc, 1e-9), 4)
    return {
        "file": str(path),
        "pairs": len(queries),
        "exact": int(exact.sum()),
        "labels": labels,
        "teacher": rel.teacher_name,
        "auc_exact_vs_rest": table,
    }
