"""The training run: catalogue -> synthetic queries -> teacher -> distilled students -> int8 ONNX -> index
-> a validated bundle. Each stage is timed and reported in the closing summary."""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from usearch.index import Index

from server.bundle import GRADES, MANIFEST, SCHEMA_VERSION, category_id, load_bundle, sha256_file
from server.featurize import RELEVANCE_FEATURES, Featurizer, FeaturizerConfig, relevance_features
from server.runtime.index import ProductIndex
from server.runtime.onnx import OnnxModel, ThreadSettings
from training.data.catalogue import Catalogue
from training.data.loaders import load_catalogue
from training.data.queries import SyntheticQuery, title_substrings
from training.export import export_onnx, quantize_int8, run_onnx
from training.presets import Preset
from training.students import (
    IntentStudent,
    QueryEncoderStudent,
    RelevanceHead,
    distillation_loss,
    fit,
    num_parameters,
    take,
)
from training.teachers import MINILM_NAME, SentenceTeacher, minilm_dir

log = logging.getLogger("sift.train")


@dataclass
class RunReport:
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        log.info("stage %s done in %.1f s", name, self.timings[name])


@dataclass
class Data:
    catalogue: Catalogue
    labels: list[str]
    titles: list[str]
    categories: np.ndarray
    train_rows: list[int]
    heldout_rows: list[int]


def train_bundle(preset: Preset, output: Path, data_path: Path | None, seed: int = 0) -> RunReport:
    """Trains every component and writes a validated bundle to `output` (replaced atomically)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    report = RunReport()
    start = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".sift-train-", dir=output.parent))
    try:
        _train(preset, work, data_path, seed, report)
        if output.exists():
            shutil.rmtree(output)
        work.chmod(0o755)  # mkdtemp makes it private; a bundle is read by a server user too
        work.rename(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.timings["total"] = round(time.perf_counter() - start, 2)
    return report


def _train(preset: Preset, out: Path, data_path: Path | None, seed: int, report: RunReport) -> None:
    tmp = out / "_fp32"
    tmp.mkdir()
    ev = report.evaluation

    with report.stage("data"):
        data = _load_data(data_path, preset, seed)
        teacher_dir = minilm_dir()
        shutil.copyfile(teacher_dir / "tokenizer.json", out / "tokenizer.json")
        featurizer = Featurizer(out / "tokenizer.json", FeaturizerConfig(num_buckets=preset.num_buckets))
        train_q = title_substrings(
            data.titles,
            data.categories.tolist(),
            data.train_rows,
            preset.queries_per_product,
            featurizer,
            seed,
        )
        eval_q = title_substrings(
            data.titles, data.categories.tolist(), data.heldout_rows, 3, featurizer, seed + 1
        )
        ev["data"] = {
            "source": str(data_path) if data_path else "synthetic",
            "products": len(data.titles),
            "categories": len(data.labels),
            "train_queries": len(train_q),
            "heldout_queries": len(eval_q),
        }

    with report.stage("teacher"):
        teacher = SentenceTeacher(teacher_dir)
        product_vecs = teacher.encode(data.titles, desc="teacher: products")
        train_vecs = teacher.encode([q.text for q in train_q], desc="teacher: queries")
        eval_vecs = teacher.encode([q.text for q in eval_q], desc="teacher: held-out queries")
        head = _train_teacher_head(train_vecs, train_q, len(data.labels), preset, seed)
        with torch.no_grad():
            teacher_logits = head(torch.from_numpy(train_vecs))
            teacher_eval = head(torch.from_numpy(eval_vecs)).argmax(1).numpy()

    eval_labels = np.array([q.category for q in eval_q])
    train_ids = featurizer.batch_ids([q.text for q in train_q])
    eval_ids = featurizer.batch_ids([q.text for q in eval_q])

    with report.stage("student_intent"):
        intent = IntentStudent(preset.num_buckets, preset.intent_dim, preset.intent_hidden, len(data.labels))
        labels = torch.tensor([q.category for q in train_q])

        def intent_loss(idx: np.ndarray) -> torch.Tensor:
            logits = intent.logits(take(train_ids, idx))
            return distillation_loss(
                logits, teacher_logits[idx], labels[idx], preset.temperature, preset.soft_weight
            )

        fit(
            intent,
            len(train_q),
            intent_loss,
            preset.epochs,
            preset.batch_size,
            preset.learning_rate,
            seed,
            "intent",
        )

    with report.stage("student_encoder"):
        encoder = QueryEncoderStudent(preset.num_buckets, preset.encoder_dim, teacher.dim)
        title_ids = featurizer.batch_ids(data.titles)
        q_targets, p_targets = torch.from_numpy(train_vecs), torch.from_numpy(product_vecs)
        q_rows = torch.tensor([q.product_row for q in train_q])

        def encoder_loss(idx: np.ndarray) -> torch.Tensor:
            rows = q_rows[idx]
            q = encoder(take(train_ids, idx))
            t = encoder(take(title_ids, rows.numpy()))
            distil = (1 - (q * q_targets[idx]).sum(1)).mean() + (1 - (t * p_targets[rows]).sum(1)).mean()
            # In-batch contrastive: the query's own product against the other products of the batch.
            logits = q @ p_targets[rows].T / 0.05
            same = rows.unsqueeze(0) == rows.unsqueeze(1)
            logits = logits.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
            return distil + 0.2 * F.cross_entropy(logits, torch.arange(len(idx)))

        fit(
            encoder,
            len(train_q),
            encoder_loss,
            preset.epochs,
            preset.batch_size,
            preset.learning_rate,
            seed,
            "encoder",
        )

    with report.stage("export"):
        example = torch.from_numpy(train_ids[:2])
        export_onnx(intent, example, "ids", "probabilities", tmp / "intent.onnx")
        export_onnx(encoder, example, "ids", "embedding", tmp / "query_encoder.onnx")
        for name in ("intent", "query_encoder"):
            quantize_int8(tmp / f"{name}.onnx", out / f"{name}.onnx")
        intent_fp32 = run_onnx(tmp / "intent.onnx", "intent", "ids", eval_ids).argmax(1)
        intent_int8 = run_onnx(out / "intent.onnx", "intent", "ids", eval_ids).argmax(1)
        enc_fp32 = run_onnx(tmp / "query_encoder.onnx", "query_encoder", "ids", eval_ids)
        enc_int8 = run_onnx(out / "query_encoder.onnx", "query_encoder", "ids", eval_ids)

    with report.stage("index"):
        index = Index(
            ndim=teacher.dim,
            metric="cos",
            dtype="f16",
            connectivity=16,
            expansion_add=128,
            expansion_search=64,
        )
        index.add(np.arange(len(product_vecs), dtype=np.uint64), product_vecs)
        index.save(str(out / "index.usearch"))
        products = {
            "ids": [p.id for p in data.catalogue.products],
            "titles": data.titles,
            "categories": data.categories.tolist(),
        }
        (out / "products.json").write_text(json.dumps(products, ensure_ascii=False), encoding="utf-8")
        served_index = ProductIndex(out / "index.usearch")

    with report.stage("relevance"):
        rel_fp32, rel_int8, rel_labels = _train_relevance(
            data, train_q, eval_q, featurizer, out, tmp, served_index, preset, seed
        )

    with report.stage("evaluate"):
        n_eval = len(eval_q)
        ev["intent"] = {
            "heldout_queries": n_eval,
            "teacher_accuracy": _mean(teacher_eval == eval_labels),
            "student_fp32_accuracy": _mean(intent_fp32 == eval_labels),
            "student_int8_accuracy": _mean(intent_int8 == eval_labels),
            "student_teacher_top1_agreement": _mean(intent_int8 == teacher_eval),
            "int8_fp32_top1_agreement": _mean(intent_int8 == intent_fp32),
        }
        ev["intent"]["retention"] = round(
            ev["intent"]["student_int8_accuracy"] / max(ev["intent"]["teacher_accuracy"], 1e-9), 4
        )
        ev["retrieval"] = _eval_retrieval(eval_q, eval_vecs, enc_int8, product_vecs, served_index)
        ev["retrieval"]["int8_fp32_mean_cosine"] = round(float((enc_int8 * enc_fp32).sum(1).mean()), 4)
        ev["relevance"] = {
            "heldout_pairs": len(rel_labels),
            "grade_accuracy_int8": _mean(rel_int8 == rel_labels),
            "grade_accuracy_fp32": _mean(rel_fp32 == rel_labels),
            "int8_fp32_grade_agreement": _mean(rel_int8 == rel_fp32),
        }
        ev["sizes"] = {
            "teacher_parameters": teacher.num_parameters,
            "intent_student_parameters": num_parameters(intent),
            "encoder_student_parameters": num_parameters(encoder),
        }

    shutil.rmtree(tmp)
    _write_manifest(out, preset, data, teacher.dim, ev, report.timings, seed)
    bundle = load_bundle(out)  # the server's own validation: a bundle that would be refused fails training
    bundle.warm_up()
    ev["bundle_bytes"] = sum(f.stat().st_size for f in out.iterdir())


def _load_data(data_path: Path | None, preset: Preset, seed: int) -> Data:
    catalogue = load_catalogue(data_path, preset.num_products, seed)
    labels = sorted(catalogue.categories)
    index = {path: i for i, path in enumerate(labels)}
    titles = [p.title for p in catalogue.products]
    categories = np.array([index[p.category] for p in catalogue.products], dtype=np.int64)
    rows = list(range(len(titles)))
    random.Random(seed).shuffle(rows)
    n_heldout = max(1, int(len(rows) * preset.heldout_fraction))
    return Data(catalogue, labels, titles, categories, sorted(rows[n_heldout:]), sorted(rows[:n_heldout]))


def _train_teacher_head(
    vecs: np.ndarray, queries: list[SyntheticQuery], num_classes: int, preset: Preset, seed: int
) -> torch.nn.Linear:
    """The teacher's intent head on frozen MiniLM sentence embeddings."""
    head = torch.nn.Linear(vecs.shape[1], num_classes)
    x, y = torch.from_numpy(vecs), torch.tensor([q.category for q in queries])
    fit(
        head,
        len(x),
        lambda idx: F.cross_entropy(head(x[idx]), y[idx]),
        preset.teacher_epochs,
        512,
        1e-2,
        seed,
        "teacher head",
    )
    return head


def _grade(query_words: list[str], query_cat: int, title_words: list[str], cat: int) -> int:
    """Synthetic judgement from catalogue facts: exact = right category and every query word (or typed prefix)
    in the title; partial = one of the two; irrelevant = neither."""
    full = all(any(t.startswith(w) for t in title_words) for w in query_words)
    same = query_cat == cat
    return 2 if (full and same) else 1 if (full or same) else 0


def _relevance_pairs(
    data: Data,
    queries: list[SyntheticQuery],
    featurizer: Featurizer,
    served_index: ProductIndex,
    out: Path,
    rng: random.Random,
) -> tuple[np.ndarray, np.ndarray]:
    by_cat: dict[int, list[int]] = {}
    for row in range(len(data.titles)):
        by_cat.setdefault(int(data.categories[row]), []).append(row)
    parent = [label.rsplit(">", 1)[0] for label in data.labels]
    siblings = {c: [d for d in by_cat if parent[d] == parent[c] and d != c] for c in by_cat}
    # The served int8 models compute the features, exactly as the server will.
    intent = OnnxModel(out / "intent.onnx", "intent", ThreadSettings())
    encoder = OnnxModel(out / "query_encoder.onnx", "query_encoder", ThreadSettings())
    feats, grades = [], []
    for q in queries:
        cands = [q.product_row, *rng.sample(by_cat[q.category], min(2, len(by_cat[q.category])))]
        if siblings[q.category]:
            cands += rng.sample(by_cat[rng.choice(siblings[q.category])], 1)
        cands += [rng.randrange(len(data.titles)) for _ in range(2)]
        q_words = featurizer.words(q.text)
        title_words = [featurizer.words(data.titles[r]) for r in cands]
        as_title = np.array([rng.random() < 0.5 for _ in cands])
        ids = featurizer.ids_of_words([q_words, *title_words])
        vecs = encoder.run({"ids": ids})
        probs = intent.run({"ids": ids})
        cand_vecs = np.where(as_title[:, None], vecs[1:], served_index.vectors(np.array(cands)))
        cats = np.where(as_title, probs[1:].argmax(1), data.categories[cands])
        feats.append(relevance_features(q_words, vecs[0], title_words, cand_vecs, probs[0][cats], featurizer))
        grades.extend(
            _grade(q_words, q.category, w, int(data.categories[r]))
            for w, r in zip(title_words, cands, strict=True)
        )
    return np.concatenate(feats), np.array(grades)


def _train_relevance(
    data: Data,
    train_q: list[SyntheticQuery],
    eval_q: list[SyntheticQuery],
    featurizer: Featurizer,
    out: Path,
    tmp: Path,
    served_index: ProductIndex,
    preset: Preset,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    sample = rng.sample(train_q, min(len(train_q), 2000))
    x, y = _relevance_pairs(data, sample, featurizer, served_index, out, rng)
    ex, ey = _relevance_pairs(data, eval_q, featurizer, served_index, out, rng)
    head = RelevanceHead(len(RELEVANCE_FEATURES))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    fit(
        head,
        len(xt),
        lambda idx: F.cross_entropy(head.logits(xt[idx]), yt[idx]),
        30,
        256,
        1e-2,
        seed,
        "relevance",
    )
    export_onnx(head, xt[:2], "features", "probabilities", tmp / "relevance.onnx")
    quantize_int8(tmp / "relevance.onnx", out / "relevance.onnx")
    fp32 = run_onnx(tmp / "relevance.onnx", "relevance", "features", ex).argmax(1)
    int8 = run_onnx(out / "relevance.onnx", "relevance", "features", ex).argmax(1)
    return fp32, int8, ey


def _eval_retrieval(
    eval_q: list[SyntheticQuery],
    teacher_vecs: np.ndarray,
    student_vecs: np.ndarray,
    product_vecs: np.ndarray,
    index: ProductIndex,
) -> dict[str, Any]:
    """JD protocol: a held-out title substring is the query, its own product the target."""
    targets = np.array([q.product_row for q in eval_q])
    teacher_top = np.argsort(-(teacher_vecs @ product_vecs.T), axis=1)[:, :10]
    student_top = np.stack([index.search(v, 10)[0] for v in student_vecs])
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(teacher_top, student_top, strict=True)]
    return {
        "teacher_recall_at_10": _mean((teacher_top == targets[:, None]).any(1)),
        "student_int8_recall_at_10": _mean((student_top == targets[:, None]).any(1)),
        "student_teacher_overlap_at_10": round(float(np.mean(overlap)), 4),
        "student_teacher_mean_cosine": round(float((teacher_vecs * student_vecs).sum(1).mean()), 4),
    }


def _mean(values: np.ndarray) -> float:
    return round(float(np.mean(values)), 4)


def _code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    return f"sift {package_version('sift')} (git {rev})"


def _tensor(name: str, dtype: str, *shape: int | str) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def _write_manifest(
    out: Path,
    preset: Preset,
    data: Data,
    dim: int,
    evaluation: dict[str, Any],
    timings: dict[str, float],
    seed: int,
) -> None:
    now = datetime.now(UTC)
    files = {
        f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(out.iterdir())
        if f.name != MANIFEST
    }
    ids = [_tensor("ids", "int64", "batch", "features")]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_version": f"{preset.name}-{now:%Y%m%dT%H%M%SZ}",
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "code_version": _code_version(),
        "training": {
            "preset": preset.to_json(),
            "seed": seed,
            "teacher": MINILM_NAME,
            "stage_seconds": timings,
        },
        "embedding_dim": dim,
        "files": files,
        "featurizer": {
            **FeaturizerConfig(num_buckets=preset.num_buckets).to_json(),
            "tokenizer": "tokenizer.json",
        },
        "labels": [{"id": category_id(path), "path": path} for path in data.labels],
        "components": {
            "intent": {
                "file": "intent.onnx",
                "description": "hashed n-gram MLP distilled from MiniLM-L6 intent teacher, int8",
                "inputs": ids,
                "outputs": [_tensor("probabilities", "float32", "batch", len(data.labels))],
            },
            "query_encoder": {
                "file": "query_encoder.onnx",
                "description": "hashed n-gram MLP trained into MiniLM-L6 embedding space, int8",
                "inputs": ids,
                "outputs": [_tensor("embedding", "float32", "batch", dim)],
            },
            "relevance": {
                "file": "relevance.onnx",
                "description": "MLP over cosine, lexical coverage and intent features, int8",
                "inputs": [_tensor("features", "float32", "batch", len(RELEVANCE_FEATURES))],
                "outputs": [_tensor("probabilities", "float32", "batch", len(GRADES))],
                "feature_names": list(RELEVANCE_FEATURES),
                "grades": list(GRADES),
            },
            "index": {
                "file": "index.usearch",
                "products": "products.json",
                "description": "usearch HNSW over MiniLM-L6 product title embeddings, cos, f16",
                "metric": "cos",
                "count": len(data.titles),
            },
        },
        "evaluation": evaluation,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
