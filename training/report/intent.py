"""The intent part: BM25 floor, zero-shot and fine-tuned teachers, stacking, BERT2DNN students with
ablations and a temperature sweep, and the small transformer student."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from training.bm25 import BM25
from training.data.dataset import TrainingData
from training.export import export_onnx, quantize_int8, run_onnx
from training.intent import (
    IntentSets,
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
)
from training.presets import Preset
from training.report.context import Context
from training.students import num_parameters
from training.teachers import minilm_dir


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
