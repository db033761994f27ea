"""The catalogue part: retrieval (two-tower, views, BM25) and relevance (cross-encoder teacher, tiered
student, rules) on held-out products, and teacher-student agreement on the real query text."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from server.featurize import Featurizer, FeaturizerConfig
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
    mrr,
    overlap_at_k,
    recall_at_k,
    spearman,
)
from training.presets import PRESETS
from training.relevance import Pairs, export_relevance, pair_features, train_relevance
from training.report.context import Context
from training.retrieval import (
    encode_queries,
    evaluate_retrieval,
    exact_top,
    train_query_encoder,
    train_retrieval,
    write_index,
)
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
        variant = replace(preset, methods=replace(preset.methods, product_teacher=product_teacher, views=2))
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
        shipped.train_queries, shipped.train_targets, shipped.product_vecs, data.titles, f, no_pairs, ctx.seed
    )
    m = evaluate_retrieval(
        shipped.eval_targets,
        shipped.eval_teacher_vecs,
        encode_queries(encoder_np, f, shipped.eval_texts),
        shipped.product_vecs,
    )
    result["retrieval_without_substring_pairs"] = m

    # Relevance on the shipped two-tower (the last teacher, 2 views).
    variant = replace(
        preset, methods=replace(preset.methods, product_teacher=ctx.settings.teachers[-1], views=2)
    )
    ids = f.batch_ids(shipped.eval_texts[:2])
    export_onnx(shipped.encoder, torch.from_numpy(ids), "ids", "embedding", out / "encoder_fp32.onnx")
    quantize_int8(out / "encoder_fp32.onnx", out / "query_encoder.onnx")
    write_index(shipped.product_vecs, out / "index.usearch")
    rel = train_relevance(data, f, out, shipped, variant, ctx.seed)
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    main, rules, _ = export_relevance(rel, out, tmp, variant)
    result["relevance"] = {"shipped": main}
    from training.relevance import train_relevance_head

    for name, v, soft in (
        (
            "flat 3-way head instead of tiered",
            replace(variant, methods=replace(variant.methods, tiered_relevance=False)),
            True,
        ),
        ("without cross-encoder soft labels", variant, False),
        ("without rules", replace(variant, methods=replace(variant.methods, rules=False)), True),
    ):
        teacher_train = None
        if soft and rel.teacher is not None:
            from training.finetune import cross_encoder_probabilities

            if "_train_probs" not in result:
                q_of = [rel.train.queries[g] for g in rel.train.group]
                result["_train_probs"] = cross_encoder_probabilities(
                    rel.teacher.model, rel.teacher.tokenizer, q_of, rel.train.titles
                )
            teacher_train = result["_train_probs"]
        head = train_relevance_head(
            rel.features["train"].model_input, rel.train.grades, teacher_train, v, ctx.seed
        )
        ablation, _, _ = export_relevance(replace(rel, head=head), out, tmp, v)
        result["relevance"][name] = ablation
    result.pop("_train_probs", None)

    # Relevance agreement on real query text: a fixed candidate set of 20 products for every real query.
    if rel.teacher is not None:
        from training.finetune import cross_encoder_probabilities

        fixed = np.random.default_rng(ctx.seed).choice(len(data.titles), 20, replace=False)
        pairs = Pairs(
            real_texts,
            np.repeat(np.arange(len(real_texts)), len(fixed)),
            np.tile(fixed, len(real_texts)),
            [data.titles[i] for i in np.tile(fixed, len(real_texts))],
            np.zeros(len(real_texts) * len(fixed), dtype=np.int64),
        )
        from server.runtime.index import ProductIndex

        feats = pair_features(
            pairs,
            f,
            out / "intent.onnx",
            out / "query_encoder.onnx",
            ProductIndex(out / "index.usearch", 2),
            data.product_labels,
            ctx.seed,
        )
        probs = run_onnx(out / "relevance.onnx", "relevance", "features", feats.model_input)
        served = cascade(rules, feats, probs)
        student_scores = served.scores
        t = cross_encoder_probabilities(
            rel.teacher.model, rel.teacher.tokenizer, [real_texts[g] for g in pairs.group], pairs.titles
        )
        teacher_scores = grade_scores(t)
        per_query = [
            spearman(student_scores[pairs.group == g], teacher_scores[pairs.group == g])
            for g in range(len(real_texts))
        ]
        result["real_query_relevance_agreement"] = {
            "queries": len(real_texts),
            "candidates_per_query": len(fixed),
            "spearman_pooled": round(spearman(student_scores, teacher_scores), 4),
            "spearman_mean_per_query": round(float(np.nanmean(per_query)), 4),
            "grade_agreement": round(float(np.mean(t.argmax(1) == served.grades)), 4),
        }
    return result
