"""The query_levers part: which of MiniLM's layers the query student keeps (layer dropping), measured where
it matters, on real shoppers' query text it never saw, and what each choice costs per query.

Each choice of layers (`--lever-layers`) is distilled exactly as the default bundle's query student is (the
preset's distillation set over the embedded catalogue, training/query_student.py), exported to int8 through
the same parity gate, and its served vectors of every distinct real query staged (WANDS and ESCI, as the
real_queries part) are compared with the teacher's: cosine, and overlap@10 of the exact top 10 over the
catalogue's teacher title vectors. The int8 students then embed the same queries one at a time, taking turns
over a few rounds, so that each choice's latency is measured beside the others'. Runs only when named: it
trains one student per choice (17 minutes for two layers and 24 for three on 2 cores at the default
preset's six epochs).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from server.runtime.onnx import OnnxModel, ThreadSettings
from training.data.dataset import load_training_data
from training.data.queries import title_substrings
from training.query_student import (
    FILE,
    distillation_set,
    export_query_student,
    query_tokenizer,
    train_query_student,
)
from training.report.context import Context
from training.report.real_common import K, distinct, exact_top_k, mean_ci, overlap_per_query, unit
from training.report.real_queries import embed_latency, load_sources
from training.teachers import TEACHERS, SentenceTeacher, teacher_dir

log = logging.getLogger("sift.report")
ROUNDS = 3
"""Rounds of the latency measurement: each round embeds every real query with each choice in turn, and a
choice's p50 is the median of its rounds'."""


def query_levers_part(ctx: Context) -> dict[str, Any]:
    preset, seed = ctx.preset, ctx.seed
    by_source, missing = load_sources(ctx.settings.data_dir)
    if not by_source:
        raise SystemExit(f"query_levers: no query file found under {ctx.settings.data_dir}")
    real = distinct([t for ts in by_source.values() for t in ts])
    name = preset.methods.product_teacher
    teacher = SentenceTeacher(teacher_dir(name))
    real_vecs = teacher.encode(real, desc="teacher on real queries")

    data = load_training_data(None, preset.num_products, preset.heldout_fraction, seed)
    labels = data.product_labels.tolist()
    substrings = title_substrings(
        data.titles, labels, data.train_rows, preset.queries_per_product, ctx.featurizer, seed
    )
    title_vecs = teacher.encode(list(data.titles), desc="teacher: titles")
    texts, targets = distillation_set(
        data,
        [q.text for q in substrings],
        title_vecs,
        lambda t: teacher.encode(t, desc="teacher: query student texts"),
        preset,
        seed,
    )
    products = unit(title_vecs)
    teacher_top = exact_top_k(unit(real_vecs), products, K)[0]
    tokens = query_tokenizer()
    rows, models = [], []
    with tempfile.TemporaryDirectory(prefix="sift-levers-") as tmp:
        for layers in ctx.settings.lever_layers:
            log.info("query_levers: layers %s", layers)
            start = time.perf_counter()
            student, tokenizer, history = train_query_student(
                texts, targets, replace(preset, query_student_layers=tuple(layers)), seed
            )
            seconds = time.perf_counter() - start
            fp32, out = Path(tmp, f"fp32-{len(rows)}"), Path(tmp, f"int8-{len(rows)}")
            fp32.mkdir()
            out.mkdir()
            gate, served = export_query_student(student, tokenizer, real, fp32, out)
            models.append(OnnxModel(out / FILE, f"query_student_{len(rows)}", ThreadSettings()))
            cosine = np.sum(unit(served) * unit(real_vecs), axis=1)
            c = mean_ci(cosine)
            o = mean_ci(overlap_per_query(exact_top_k(unit(served), products, K)[0], teacher_top))
            rows.append(
                {
                    "layers": list(layers),
                    "shipped_by_preset": tuple(layers) == tuple(preset.query_student_layers),
                    "mean_cosine": c["mean"],
                    "cosine_ci95": c["ci95"],
                    "cosine_p10": round(float(np.quantile(cosine, 0.1)), 4),
                    "overlap_at_10": o["mean"],
                    "overlap_ci95": o["ci95"],
                    "train_seconds": round(seconds),
                    "final_loss": round(history[-1], 4),
                    "int8": gate["method"],
                }
            )
        p50s = [[embed_latency(m, tokens.ids, real)["p50_ms"] for m in models] for _ in range(ROUNDS)]
    base = next((i for i, row in enumerate(rows) if row["shipped_by_preset"]), None)
    for i, row in enumerate(rows):
        row["embed_p50_ms"] = round(float(np.median([r[i] for r in p50s])), 3)
        if base is not None:
            row["embed_x_preset"] = round(float(np.median([r[i] / r[base] for r in p50s])), 3)
    return {
        "preset": preset.name,
        "teacher": TEACHERS.get(name, name),
        "distillation_texts": len(texts),
        "real_queries": len(real),
        "products": len(products),
        "latency_rounds": ROUNDS,
        "sources": {src: len(ts) for src, ts in by_source.items()},
        "missing_files": missing,
        "rows": rows,
    }
