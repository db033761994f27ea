"""The layers part: teacher fine-tuning time against quality, and kernel analysis of every teacher layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.metrics import (
    accuracy,
    spearman,
)
from training.report.context import Context
from training.teachers import minilm_dir, teacher_dir


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
