"""sift-train report: every method measured against its absence, students against their teachers, on real
held-out queries (a taxonomy-only directory such as ../shared/data/wands-queries) and on the held-out
products of the embedded catalogue (JD protocol). Writes README.md, results.json and PNG plots.

Parts (each rerunnable alone with --parts; results of the others are kept from results.json):
- intent: BM25 floor, zero-shot and fine-tuned teachers, stacking, BERT2DNN students with ablations and a
  temperature sweep, the small transformer student; top-1 (95% bootstrap CI), macro-F1, agreement;
- catalogue: retrieval (two-tower, views, BM25) and relevance (cross-encoder teacher, tiered student,
  rules) on held-out products, and teacher-student agreement on the real query text;
- layers: teacher fine-tuning time against quality (full, frozen bottom, dropped top) and kernel analysis
  of every teacher layer, checked against the fine-tuned results;
- latency: per call at batch 1 on one thread, students (ONNX) against teachers (PyTorch and ONNX).
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.featurize import Featurizer, FeaturizerConfig
from training.bm25 import BM25
from training.data.dataset import TrainingData, load_training_data
from training.export import export_onnx, quantize_int8, run_onnx
from training.intent import (
    IntentSets,
    build_intent_sets,
    label_prompts,
    stack_logits,
    student_logits,
    train_intent_student,
    train_intent_teacher,
)
from training.metrics import (
    accuracy,
    bootstrap_ci,
    macro_f1,
    mrr,
    overlap_at_k,
    recall_at_k,
    spearman,
)
from training.presets import PRESETS, Preset
from training.relevance import GRADE_VALUES, Pairs, pair_features
from training.retrieval import encode_queries, evaluate_retrieval, exact_top, train_query_encoder, write_index
from training.students import num_parameters
from training.teachers import SentenceTeacher, minilm_dir, teacher_dir

log = logging.getLogger("sift.report")
PARTS = ("intent", "catalogue", "layers", "latency")


class ReportSettings(BaseSettings):
    model_config = SettingsConfigDict(
        cli_kebab_case=True, cli_prog_name="sift-train report", use_attribute_docstrings=True, extra="ignore"
    )

    data: Path = Path("../shared/data/wands-queries")
    """Taxonomy-only directory with real labelled queries in train/dev/test splits."""
    output: Path = Path("reports/wands")
    """Where README.md, results.json and the plots go."""
    preset: str = "default"
    """Sizes of the intent and layer runs (tiny for a quick look)."""
    catalogue_preset: str = "tiny"
    """Sizes of the catalogue part (two product teachers, several students; mpnet makes it slow)."""
    teachers: tuple[str, ...] = ("minilm", "mpnet")
    """Intent teachers compared and stacked."""
    parts: tuple[str, ...] = PARTS
    """Which parts to (re)run."""
    seed: int = Field(0, ge=0)


class Context:
    def __init__(self, settings: ReportSettings) -> None:
        self.settings = settings
        self.preset: Preset = PRESETS[settings.preset]
        self.seed = settings.seed
        self.featurizer = Featurizer(
            minilm_dir() / "tokenizer.json", FeaturizerConfig(num_buckets=self.preset.num_buckets)
        )
        # Models the parts hand to each other (the latency part times the intent part's students).
        self.work = settings.output / ".work"
        self.work.mkdir(parents=True, exist_ok=True)
        self._real: tuple[TrainingData, IntentSets] | None = None

    def real(self) -> tuple[TrainingData, IntentSets]:
        if self._real is None:
            data = load_training_data(
                self.settings.data, self.preset.num_products, self.preset.heldout_fraction, self.seed
            )
            self._real = data, build_intent_sets(data, self.preset, self.featurizer, self.seed)
        return self._real


# ---------------------------------------------------------------------------------------------- intent


def _row(name: str, kind: str, pred: np.ndarray, gold: np.ndarray, **extra: Any) -> dict[str, Any]:
    lo, hi = bootstrap_ci(accuracy, pred, gold)
    return {
        "name": name,
        "kind": kind,
        "top1": round(accuracy(pred, gold), 4),
        "top1_ci": [round(lo, 4), round(hi, 4)],
        "macro_f1": round(macro_f1(pred, gold), 4),
        **extra,
    }


def _source_mask(sets: IntentSets, drop: set[str]) -> np.ndarray:
    """Rows of the distillation set that did not come from the dropped sources (sources are contiguous)."""
    keep = np.ones(len(sets.texts), dtype=bool)
    start = 0
    for name, count in sets.sources.items():
        if name in drop:
            keep[start : start + count] = False
        start += count
    return keep


def _subset(sets: IntentSets, keep: np.ndarray) -> IntentSets:
    return replace(sets, texts=[t for t, k in zip(sets.texts, keep, strict=True) if k], hard=sets.hard[keep])


def intent_part(ctx: Context) -> dict[str, Any]:
    data, sets = ctx.real()
    preset, f = ctx.preset, ctx.featurizer
    known = sets.eval_labels >= 0
    gold = sets.eval_labels[known]
    real_texts = [q.text for q in data.queries]
    rows: list[dict[str, Any]] = []

    bm25 = BM25([" ".join(p) for p in label_prompts(data.labels, data.descriptions)])
    bm_pred = np.array([int(bm25.top_k(t, 1)[0]) for t in sets.eval_texts])
    rows.append(_row("BM25: query against label names", "floor", bm_pred[known], gold))

    teachers = {}
    for name in ctx.settings.teachers:
        t = train_intent_teacher(name, data, sets, preset, ctx.seed)
        teachers[name] = t
        rows.append(
            _row(
                f"{name} zero-shot (label prototypes)",
                "teacher",
                t.zero_shot_eval_logits.argmax(1)[known],
                gold,
                parameters=t.num_parameters,
            )
        )
        rows.append(
            _row(
                f"{name} fine-tuned (top {preset.teacher_train_top} layers)",
                "teacher",
                t.eval_logits.argmax(1)[known],
                gold,
                parameters=t.num_parameters,
                train_seconds=t.train_seconds,
            )
        )
    names = list(teachers)
    stacked_train = stack_logits([teachers[n].train_logits for n in names], preset.temperature)
    stacked_eval = stack_logits([teachers[n].eval_logits for n in names], preset.temperature)
    teacher_pred = stacked_eval.argmax(1)
    if len(names) > 1:
        rows.append(_row(f"stacked teachers ({' + '.join(names)})", "teacher", teacher_pred[known], gold))
    teacher_acc = accuracy(teacher_pred[known], gold)
    real_teacher = {n: teachers[n] for n in names}

    def real_teacher_pred(texts: list[str]) -> np.ndarray:
        # Teacher answers on all real query text (for agreement), from the models already fine-tuned.
        from training.finetune import classifier_logits

        logits = [classifier_logits(real_teacher[n].model, real_teacher[n].tokenizer, texts) for n in names]
        return stack_logits(logits, preset.temperature).argmax(1)

    real_teacher_answers = real_teacher_pred(real_texts)

    def student_row(
        label: str,
        variant: Preset,
        s: IntentSets,
        logits: np.ndarray,
        temperature: float,
        kind: str = "student",
    ) -> tuple[dict[str, Any], Any]:
        start = time.perf_counter()
        student, history = train_intent_student(
            s, logits, f, len(data.labels), variant, ctx.seed, temperature
        )
        seconds = time.perf_counter() - start
        pred = student_logits(student, f, sets.eval_texts).argmax(1)
        real_pred = student_logits(student, f, real_texts).argmax(1)
        row = _row(
            label,
            kind,
            pred[known],
            gold,
            parameters=num_parameters(student),
            train_seconds=round(seconds, 1),
            retention=round(accuracy(pred[known], gold) / max(teacher_acc, 1e-9), 4),
            agreement_eval=round(float(np.mean(pred == teacher_pred)), 4),
            agreement_real_queries=round(float(np.mean(real_pred == real_teacher_answers)), 4),
            distillation_texts=len(s.texts),
            loss_first_last=[round(history[0], 4), round(history[-1], 4)],
        )
        return row, student

    main_row, main_student = student_row(
        f"BERT2DNN student ({' + '.join(names)}, T={preset.temperature:g})",
        preset,
        sets,
        stacked_train,
        preset.temperature,
    )
    main_row["kind"] = "student (ships)"
    rows.append(main_row)
    sweep = []
    for temp in (1.0, 2.0, 4.0, 8.0):
        if temp == preset.temperature:
            sweep.append(
                {"temperature": temp, "top1": main_row["top1"], "agreement": main_row["agreement_eval"]}
            )
            continue
        stacked_t = stack_logits([teachers[n].train_logits for n in names], temp)
        r, _ = student_row(f"student T={temp:g}", preset, sets, stacked_t, temp, "ablation: temperature")
        rows.append(r)
        sweep.append({"temperature": temp, "top1": r["top1"], "agreement": r["agreement_eval"]})
    if len(names) > 1:
        for n in names:
            r, _ = student_row(
                f"student, single teacher {n}",
                preset,
                sets,
                teachers[n].train_logits,
                preset.temperature,
                "ablation: no stacking",
            )
            rows.append(r)
    no_soft = replace(preset, methods=replace(preset.methods, soft_labels=False))
    r, _ = student_row(
        "student without soft labels (hard labels only)",
        no_soft,
        sets,
        stacked_train,
        preset.temperature,
        "ablation",
    )
    rows.append(r)
    for source, label in (
        ("title_substrings", "without catalogue pre-training (title substrings)"),
        ("label_queries", "without queries generated from label names"),
        ("augmented_real_queries", "without augmented real queries"),
        ("vocabulary_queries", "without vocabulary queries"),
    ):
        if source not in sets.sources:
            continue
        keep = _source_mask(sets, {source})
        r, _ = student_row(
            f"student {label}",
            preset,
            _subset(sets, keep),
            stacked_train[keep],
            preset.temperature,
            "ablation",
        )
        rows.append(r)

    transformer = _transformer_student_row(
        ctx, data, sets, stacked_train, teacher_pred, known, gold, teacher_acc
    )
    rows.append(transformer["row"])

    # Keep the shipped student's and the transformer student's ONNX for the latency part.
    ids = f.batch_ids(sets.eval_texts[:2])
    export_onnx(main_student, torch.from_numpy(ids), "ids", "probabilities", ctx.work / "ff_fp32.onnx")
    quantize_int8(ctx.work / "ff_fp32.onnx", ctx.work / "ff_int8.onnx")
    parity = float(
        np.mean(
            run_onnx(ctx.work / "ff_int8.onnx", "intent", "ids", f.batch_ids(real_texts)).argmax(1)
            == run_onnx(ctx.work / "ff_fp32.onnx", "intent", "ids", f.batch_ids(real_texts)).argmax(1)
        )
    )
    unknown = ~known
    probs = torch.softmax(torch.from_numpy(student_logits(main_student, f, sets.eval_texts)), -1).numpy()
    return {
        "data": str(ctx.settings.data),
        "eval": f"{sets.eval_name}: {int(known.sum())} labelled, {int(unknown.sum())} of no known class",
        "labels": len(data.labels),
        "sources": sets.sources,
        "rows": rows,
        "temperature_sweep": sweep,
        "int8_fp32_top1_agreement_real_queries": round(parity, 4),
        "unknown_class_mean_top_probability": round(float(probs[unknown].max(1).mean()), 4)
        if unknown.any()
        else None,
        "known_class_mean_top_probability": round(float(probs[known].max(1).mean()), 4),
        "transformer_onnx": str(transformer["onnx"]),
    }


def _transformer_student_row(
    ctx: Context,
    data: TrainingData,
    sets: IntentSets,
    soft: np.ndarray,
    teacher_pred: np.ndarray,
    known: np.ndarray,
    gold: np.ndarray,
    teacher_acc: float,
) -> dict[str, Any]:
    from training.transformer_student import (
        build_transformer_student,
        count_parameters,
        distil_transformer_student,
        encode_texts,
        export_transformer_onnx,
    )

    start = time.perf_counter()
    student, tokenizer = build_transformer_student(
        minilm_dir(), sets.texts, num_layers=2, num_classes=len(data.labels)
    )
    history = distil_transformer_student(
        student,
        tokenizer,
        sets.texts,
        soft_targets=soft,
        hard_labels=sets.hard,
        temperature=ctx.preset.temperature,
        soft_weight=ctx.preset.soft_weight,
        epochs=2,
        seed=ctx.seed,
    )
    seconds = time.perf_counter() - start
    path = ctx.work / "transformer_student.onnx"
    export_transformer_onnx(student, tokenizer, path)
    quantize_int8(path, ctx.work / "transformer_student_int8.onnx")
    ids, mask = encode_texts(tokenizer, sets.eval_texts)
    from server.runtime.onnx import OnnxModel, ThreadSettings

    model = OnnxModel(ctx.work / "transformer_student_int8.onnx", "transformer", ThreadSettings(intra_op=2))
    pred = model.run({"input_ids": ids, "attention_mask": mask}).argmax(1)
    row = _row(
        "small transformer student (MiniLM, top 4 of 6 layers dropped, pruned vocabulary), int8",
        "student",
        pred[known],
        gold,
        parameters=count_parameters(student),
        train_seconds=round(seconds, 1),
        retention=round(accuracy(pred[known], gold) / max(teacher_acc, 1e-9), 4),
        agreement_eval=round(float(np.mean(pred == teacher_pred)), 4),
        loss_first_last=[round(history[0], 4), round(history[-1], 4)],
    )
    return {"row": row, "onnx": ctx.work / "transformer_student_int8.onnx", "tokenizer": tokenizer}


# ------------------------------------------------------------------------------------------- catalogue


def catalogue_part(ctx: Context) -> dict[str, Any]:
    """Held-out products of the embedded catalogue (JD protocol) for labelled retrieval and relevance, and
    agreement on real query text (which needs no labels)."""
    from training.pipeline import (
        _export_relevance,
        _served_scores,
        _train_relevance,
        _train_retrieval,
    )

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
        r = _train_retrieval(data, f, variant, ctx.seed)
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
    rel = _train_relevance(data, f, out, shipped, variant, ctx.seed)
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    main, rules = _export_relevance(rel, out, tmp, variant)
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
        ablation, _ = _export_relevance(replace(rel, head=head), out, tmp, v)
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
        student_scores, _ = _served_scores(rules, feats, probs)
        t = cross_encoder_probabilities(
            rel.teacher.model, rel.teacher.tokenizer, [real_texts[g] for g in pairs.group], pairs.titles
        )
        teacher_scores = t @ GRADE_VALUES
        per_query = [
            spearman(student_scores[pairs.group == g], teacher_scores[pairs.group == g])
            for g in range(len(real_texts))
        ]
        result["real_query_relevance_agreement"] = {
            "queries": len(real_texts),
            "candidates_per_query": len(fixed),
            "spearman_pooled": round(spearman(student_scores, teacher_scores), 4),
            "spearman_mean_per_query": round(float(np.nanmean(per_query)), 4),
            "grade_agreement": round(
                float(np.mean(t.argmax(1) == _served_scores(rules, feats, probs)[1])), 4
            ),
        }
    return result


# ----------------------------------------------------------------------------------------------- layers


def layers_part(ctx: Context) -> dict[str, Any]:
    """Fine-tuning time against quality (the reply-suggestion paper's layer freezing and dropping), and the
    kernel score of each layer, checked against those fine-tuned results."""
    from training.finetune import classifier_logits, finetune_classifier, layer_embeddings
    from training.kernel import kernel_scores

    data, sets = ctx.real()
    known = sets.eval_labels >= 0
    gold = sets.eval_labels[known]
    labelled = np.flatnonzero(sets.hard >= 0)
    rng = np.random.default_rng(ctx.seed)
    pick = np.sort(rng.choice(labelled, min(len(labelled), ctx.preset.teacher_max_texts // 4), replace=False))
    texts, labels = [sets.texts[i] for i in pick], sets.hard[pick]
    configs = [
        ("full fine-tuning", {}),
        ("freeze embeddings + bottom 2", {"freeze_bottom": 2}),
        ("freeze embeddings + bottom 4", {"freeze_bottom": 4}),
        ("freeze embeddings + bottom 5", {"freeze_bottom": 5}),
        ("drop top 1 layer (keep 5)", {"keep_layers": 5}),
        ("drop top 2 layers (keep 4)", {"keep_layers": 4}),
        ("drop top 3 layers (keep 3)", {"keep_layers": 3}),
        ("drop top 4 layers (keep 2)", {"keep_layers": 2}),
        ("drop top 2 + freeze bottom 2", {"keep_layers": 4, "freeze_bottom": 2}),
    ]
    rows = []
    for name, cfg in configs:
        result = finetune_classifier(
            minilm_dir(),
            texts,
            labels,
            len(data.labels),
            epochs=1,
            seed=ctx.seed,
            freeze_embeddings=True,
            desc=name,
            **cfg,
        )
        pred = classifier_logits(result.model, result.tokenizer, sets.eval_texts).argmax(1)
        rows.append(
            {
                "config": name,
                **cfg,
                "train_seconds": round(result.train_seconds, 1),
                "trainable_parameters": result.trainable_parameters,
                "top1": round(accuracy(pred[known], gold), 4),
            }
        )
    base = rows[0]["train_seconds"]
    for row in rows:
        row["time_vs_full"] = round(row["train_seconds"] / base, 3)

    # Kernel analysis: every layer of every teacher, on a sample of the labelled texts.
    sample = np.sort(rng.choice(len(texts), min(len(texts), 1500), replace=False))
    kernel = {}
    for name in ctx.settings.teachers:
        layers = layer_embeddings(teacher_dir(name), [texts[i] for i in sample])
        kernel[name] = [
            {"layer": i, **kernel_scores(x, labels[sample], seed=ctx.seed)} for i, x in enumerate(layers)
        ]
    # Check: does the kernel score of layer n rank the fine-tuned accuracy of the n-layer model?
    by_layers = {
        6: rows[0]["top1"],
        **{
            row["keep_layers"]: row["top1"]
            for row in rows
            if set(row) >= {"keep_layers"} and "freeze_bottom" not in row
        },
    }
    check = {}
    for key in ("kta_rbf", "krr_accuracy"):
        ks = [kernel["minilm"][n][key] for n in by_layers]
        check[key] = {
            "layers": list(by_layers),
            "kernel": ks,
            "fine_tuned_top1": list(by_layers.values()),
            "spearman": round(spearman(np.array(ks), np.array(list(by_layers.values()))), 4),
        }
    # The kernel's choices: the best layer of each teacher, and the teacher whose best layer scores highest.
    best = {n: max(layers, key=lambda x: x["krr_accuracy"]) for n, layers in kernel.items()}
    choice = {
        "best_layer": {n: b["layer"] for n, b in best.items()},
        "best_teacher": max(best, key=lambda n: best[n]["krr_accuracy"]),
    }
    return {
        "fine_tuning_texts": len(texts),
        "rows": rows,
        "kernel": kernel,
        "kernel_check": check,
        "kernel_choice": choice,
    }


# ---------------------------------------------------------------------------------------------- latency


def latency_part(ctx: Context, results: dict[str, Any]) -> dict[str, Any]:
    from training.latency import onnx_latency, torch_encoder_latency
    from training.onnx_teacher import export_sentence_encoder, quantize_with_gate
    from training.transformer_student import encode_texts, load_tokenizer

    data, _sets = ctx.real()
    texts = [q.text for q in data.queries][:200]
    f = ctx.featurizer
    rows = []
    if not (ctx.work / "ff_int8.onnx").is_file():
        intent_part(ctx)  # makes the student ONNX files this part times
    ff_feed = lambda t: {"ids": f.batch_ids([t])}  # noqa: E731 - featurization is part of the timed call
    for label, path in (
        ("BERT2DNN student, ONNX int8", "ff_int8.onnx"),
        ("BERT2DNN student, ONNX fp32", "ff_fp32.onnx"),
    ):
        rows.append({"model": label, "parameters": None, **onnx_latency(ctx.work / path, ff_feed, texts)})
    minilm_tok = load_tokenizer(minilm_dir())

    def tok_feed(tok: Any) -> Any:
        def feed(t: str) -> dict[str, np.ndarray]:
            ids, mask = encode_texts(tok, [t])
            return {"input_ids": ids, "attention_mask": mask}

        return feed

    rows.append(
        {
            "model": "small transformer student (2 layers), ONNX int8",
            **onnx_latency(ctx.work / "transformer_student_int8.onnx", tok_feed(minilm_tok), texts),
        }
    )
    for name in ctx.settings.teachers:
        d = teacher_dir(name)
        tok = load_tokenizer(d)
        rows.append({"model": f"{name} teacher, PyTorch fp32", **torch_encoder_latency(d, texts[:50])})
        fp32 = ctx.work / f"{name}_fp32.onnx"
        export_sentence_encoder(d, fp32)
        rows.append({"model": f"{name} teacher, ONNX fp32", **onnx_latency(fp32, tok_feed(tok), texts)})
        ref = run_feed_all(fp32, tok_feed(tok), texts[:100])

        def check(path: Path, ref: np.ndarray = ref, tok: Any = tok) -> float:
            return float((run_feed_all(path, tok_feed(tok), texts[:100]) * ref).sum(1).min())

        gate = quantize_with_gate(fp32, ctx.work / f"{name}_int8.onnx", check, 0.95)
        rows.append(
            {
                "model": f"{name} teacher, ONNX {gate['method']} (min cosine {gate['score']:.3f})",
                "gate": gate,
                **onnx_latency(ctx.work / f"{name}_int8.onnx", tok_feed(tok), texts),
            }
        )
    student = rows[0]["median_ms"]
    for row in rows:
        row["vs_student_int8"] = round(row["median_ms"] / student, 1)
    return {"texts": len(texts), "threads": 1, "batch": 1, "rows": rows}


def run_feed_all(path: Path, feed: Any, texts: list[str]) -> np.ndarray:
    from server.runtime.onnx import OnnxModel, ThreadSettings

    model = OnnxModel(path, "check", ThreadSettings(intra_op=2))
    return np.concatenate([model.run(feed(t)) for t in texts])


# ---------------------------------------------------------------------------------------------- output


def main(argv: list[str]) -> None:
    settings = ReportSettings(_cli_parse_args=argv)
    ctx = Context(settings)
    settings.output.mkdir(parents=True, exist_ok=True)
    path = settings.output / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for part in settings.parts:
        if part not in PARTS:
            raise SystemExit(f"--parts: unknown part {part!r}; known: {PARTS}")
        start = time.perf_counter()
        log.info("report part %s ...", part)
        results[part] = latency_part(ctx, results) if part == "latency" else globals()[f"{part}_part"](ctx)
        results[part]["seconds"] = round(time.perf_counter() - start, 1)
        results[part]["command"] = "sift-train report " + shlex.join(argv)
        results["meta"] = {
            "preset": settings.preset,
            "machine": f"{platform.machine()}, {_cpu_model()}, {torch.get_num_threads()} torch threads",
            "python": sys.version.split()[0],
        }
        path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    from training.report_markdown import write_report

    write_report(results, settings.output)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
