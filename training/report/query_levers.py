"""The query_levers part: which of MiniLM's layers the query student keeps (layer dropping), measured where
it matters, on real shoppers' query text it never saw.

Each choice of three layers is distilled exactly as the default bundle's query student is (the preset's
distillation set over the embedded catalogue, training/query_student.py), exported to int8 through the same
parity gate, and its served vectors of every distinct real query staged (WANDS and ESCI, as the
real_queries part) are compared with the teacher's. Runs only when named: it trains one student per choice
(about 25 minutes each on 2 cores at the default preset's four epochs: its retrieval stage grew by
12.7 minutes when the epochs went from two to four).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.data.dataset import load_training_data
from training.data.queries import title_substrings
from training.query_student import distillation_set, export_query_student, train_query_student
from training.report.context import Context
from training.report.real_common import distinct, mean_ci, unit
from training.report.real_queries import load_sources
from training.teachers import TEACHERS, SentenceTeacher, teacher_dir

log = logging.getLogger("sift.report")
LAYER_CHOICES: tuple[tuple[int, ...], ...] = ((0, 1, 2), (0, 2, 4), (0, 3, 5))
"""The bottom three (plain layer dropping), every other one, and first, middle and last."""


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
    texts, targets = distillation_set(
        data,
        [q.text for q in substrings],
        teacher.encode(list(data.titles), desc="teacher: titles"),
        lambda t: teacher.encode(t, desc="teacher: query student texts"),
        preset,
        seed,
    )
    rows = []
    for layers in LAYER_CHOICES:
        log.info("query_levers: layers %s", layers)
        start = time.perf_counter()
        student, tokenizer, history = train_query_student(
            texts, targets, replace(preset, query_student_layers=layers), seed
        )
        seconds = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="sift-levers-") as tmp:
            fp32, out = Path(tmp, "fp32"), Path(tmp, "int8")
            fp32.mkdir()
            out.mkdir()
            gate, served = export_query_student(student, tokenizer, real, fp32, out)
        cosine = np.sum(unit(served) * unit(real_vecs), axis=1)
        c = mean_ci(cosine)
        rows.append(
            {
                "layers": list(layers),
                "shipped_by_preset": tuple(layers) == tuple(preset.query_student_layers),
                "mean_cosine": c["mean"],
                "cosine_ci95": c["ci95"],
                "cosine_p10": round(float(np.quantile(cosine, 0.1)), 4),
                "train_seconds": round(seconds),
                "final_loss": round(history[-1], 4),
                "int8": gate["method"],
            }
        )
    return {
        "preset": preset.name,
        "teacher": TEACHERS.get(name, name),
        "distillation_texts": len(texts),
        "real_queries": len(real),
        "sources": {src: len(ts) for src, ts in by_source.items()},
        "missing_files": missing,
        "rows": rows,
    }
