"""The latency part: per call at batch 1 on one thread, students (ONNX) against teachers (PyTorch and
ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.report.context import Context
from training.report.intent import intent_part
from training.teachers import minilm_dir, teacher_dir


def latency_part(ctx: Context) -> dict[str, Any]:
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
