"""The product teacher of `sift-train update`: its int8 ONNX export, built on first use, cached per teacher.

PyTorch MiniLM took 272 s of a 329 s update adding 10,000 products to a million (2 cores); the ONNX int8
export is several times faster. It is built by training/onnx_teacher.py (export, then `quantize_with_gate`
against the fp32 export's vectors of the same texts), once per teacher weights and onnxruntime version, in a
cache outside any bundle: bundles stay what the server reads (no teacher file to ship and hash at every
start), and every bundle of that teacher shares it. Each update then checks it against the bundle itself
(`parity`): the vectors it adds must stay in the space of the index's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training.teachers import length_batches, teacher_dir
from training.transformer_student import encode_texts, load_tokenizer

CACHE_ENV = "SIFT_TEACHER_CACHE"
MAX_TOKENS = 48
"""As training.teachers.SentenceTeacher's, which embedded the bundle's products."""
MIN_COSINE = 0.98
"""Worst probe product: its title's new vector against the one in the index (fp32 teacher, stored f16).
Measured on 256 titles of the default bundle (min / mean cosine to PyTorch): int8 0.949 / 0.966 (refused),
int8_per_channel 0.987 / 0.993 at about twice int8's speed here, int8_embeddings 0.999 / 1.000."""
MIN_MEAN_COSINE = 0.99
"""Mean over the probe products: int8 error is spread thin, a different teacher is far off on every one."""
PROBES = 256
"""Products of the bundle whose titles the gate embeds (the first rows: the bundle's own, trained ones)."""
BATCH = 64


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sift" / "teachers")


class OnnxTeacher:
    """Mean-pooled, L2-normalised sentence vectors from an exported teacher, batched by length."""

    def __init__(self, path: Path, model_dir: Path) -> None:
        self.path = path
        self.tokenizer = load_tokenizer(model_dir, MAX_TOKENS)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str]) -> np.ndarray:
        out: np.ndarray | None = None
        for rows in length_batches([len(t) for t in texts], BATCH):
            ids, mask = encode_texts(self.tokenizer, [texts[i] for i in rows])
            got = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
            if out is None:
                out = np.empty((len(texts), got.shape[1]), dtype=np.float32)
            out[rows] = got
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _weights_key(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in model_dir.iterdir() if p.suffix in (".safetensors", ".json")):
        digest.update(name.encode())
        digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_teacher(name: str, texts: list[str], cache: Path | None = None) -> tuple[OnnxTeacher, dict]:
    """The int8 ONNX export of teacher `name` and its build gate, built into `cache` if not there: the first
    of quantize_with_gate's methods whose minimum cosine to the fp32 export's vectors of `texts` reaches
    MIN_COSINE (fp32 when none does)."""
    model_dir = teacher_dir(name)
    where = (cache or cache_dir()) / f"{name}-{_weights_key(model_dir)}-ort{ort.__version__}"
    model, gate_file = where / "teacher.onnx", where / "gate.json"
    if not (model.is_file() and gate_file.is_file()):
        from training.onnx_teacher import export_sentence_encoder, quantize_with_gate  # torch: first use

        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="teacher-", dir=where) as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_sentence_encoder(model_dir, fp32, MAX_TOKENS)
            reference = OnnxTeacher(fp32, model_dir).encode(texts)

            def check(candidate: Path) -> float:
                return float((OnnxTeacher(candidate, model_dir).encode(texts) * reference).sum(1).min())

            staged = Path(tmp) / "teacher.onnx"
            gate = quantize_with_gate(fp32, staged, check, MIN_COSINE)
            gate["texts"] = len(texts)
            shutil.move(str(staged), model)  # the model before its gate file: a cut build is rebuilt
        gate_file.write_text(json.dumps(gate, indent=1))
    return OnnxTeacher(model, model_dir), json.loads(gate_file.read_text())


def parity(
    encode: Callable[[list[str]], np.ndarray], titles: list[str], stored: np.ndarray
) -> dict[str, Any]:
    """Min and mean cosine of `encode(titles)` to `stored` (the index's title vectors of those products);
    raises ValueError, saying so, below MIN_COSINE or MIN_MEAN_COSINE or at another dimension."""
    got = np.asarray(encode(titles), dtype=np.float32)
    if got.ndim != 2 or got.shape[1] != stored.shape[1]:
        raise ValueError(
            f"the product teacher gives vectors of dim {got.shape[-1]}, the bundle's index holds "
            f"{stored.shape[1]}: not the teacher the bundle was built with"
        )
    norms = np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(stored, axis=1), 1e-9)
    cosine = (got * stored).sum(1) / norms
    result = {
        "probe_products": len(titles),
        "min_cosine": round(float(cosine.min()), 4),
        "mean_cosine": round(float(cosine.mean()), 4),
        "required": {"min": MIN_COSINE, "mean": MIN_MEAN_COSINE},
    }
    if result["min_cosine"] < MIN_COSINE or result["mean_cosine"] < MIN_MEAN_COSINE:
        raise ValueError(
            f"the product teacher's vectors of {len(titles)} of the bundle's titles are at cosine "
            f"{result['mean_cosine']:.3f} on average (worst {result['min_cosine']:.3f}) to the index's, "
            f"below the {MIN_MEAN_COSINE} (worst {MIN_COSINE}) required: not the teacher the bundle was "
            "built with, or an export that does not match it, so new vectors would not be comparable"
        )
    return result
