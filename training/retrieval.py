"""Retrieval: the asymmetric two-tower. Products are embedded offline by the big teacher (optionally as
several views per product); queries are embedded online by a small hashed n-gram student trained into that
space with catalogue pre-training (a title substring paired with its own product, in-batch negatives).

The retrieval stage (`train_retrieval`), its export to the bundle and its evaluation live here too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from usearch.index import Index

from server.catalogue import product_arrays, save_product_arrays
from server.featurize import Featurizer
from server.manifest import ArraySpec, LexicalComponent
from server.runtime.index import ProductIndex
from training.data.catalogue import Catalogue
from training.data.dataset import TrainingData
from training.data.queries import SyntheticQuery, title_substrings
from training.export import export_onnx, run_onnx
from training.gate import PARITY, Paired
from training.metrics import mrr, overlap_at_k, recall_at_k
from training.onnx_teacher import quantize_with_gate
from training.presets import Preset
from training.query_student import FILE as QUERY_STUDENT_FILE
from training.query_student import (
    distillation_set,
    encode_onnx,
    export_query_student,
    general_set,
    kept_token_share,
    train_query_student,
)
from training.scale import LabelEngine
from training.search_modes import SimilarProducts, build_lexical, choose_mode, ranked
from training.static_student import StaticStudent, export_static_student, train_static_student
from training.students import QueryEncoderStudent, fit, take
from training.teachers import TEACHERS, SentenceTeacher, minilm_dir, teacher_dir
from training.transformer_student import TransformerStudent

CONTRASTIVE_WEIGHT = 0.2
CONTRASTIVE_TEMPERATURE = 0.05


def product_views(catalogue: Catalogue, views: int) -> list[list[str]]:
    """Texts per product: the title; then category leaf + title; then brand + category path."""
    out = []
    for p in catalogue.products:
        leaf = p.category.split(" > ")[-1]
        texts = [p.title, f"{leaf}: {p.title}", f"{p.brand} {p.category.replace(' > ', ' ')}".strip()]
        out.append(texts[:views])
    return out


def embed_products(encode: callable, catalogue: Catalogue, views: int) -> np.ndarray:
    """[products, views, dim], unit vectors."""
    texts = product_views(catalogue, views)
    flat = encode([t for ts in texts for t in ts])
    return flat.reshape(len(texts), views, -1)


def train_query_encoder(
    queries: list[SyntheticQuery],
    query_targets: np.ndarray,
    product_vecs: np.ndarray,
    titles: list[str],
    featurizer: Featurizer,
    preset: Preset,
    seed: int,
    general: tuple[list[str], np.ndarray] | None = None,
) -> tuple[QueryEncoderStudent, list[float]]:
    """The student maps a query (and a title) to the teacher's vector of it, and ranks the query's own
    product above the other products of the batch; `general` (texts and the teacher's vectors of them) adds
    texts it only learns to put where the teacher does."""
    dim = product_vecs.shape[-1]
    encoder = QueryEncoderStudent(preset.num_buckets, preset.encoder_dim, dim)
    ids = featurizer.batch_ids([q.text for q in queries])
    title_ids = featurizer.batch_ids(titles)
    q_targets = torch.from_numpy(query_targets)
    p_targets = torch.from_numpy(np.ascontiguousarray(product_vecs[:, 0]))
    q_rows = torch.tensor([q.product_row for q in queries])
    use_pairs = preset.methods.substrings
    n = len(queries)
    g_ids = featurizer.batch_ids(general[0]) if general is not None else None
    g_targets = torch.from_numpy(general[1]) if general is not None else None

    def loss(both: np.ndarray) -> torch.Tensor:
        # A batch draws from the queries (rows < n) and the general texts (rows >= n) in proportion.
        idx, extra = both[both < n], both[both >= n] - n
        out = torch.zeros(())
        if len(extra):
            assert g_ids is not None and g_targets is not None
            out = (1 - (encoder(take(g_ids, extra)) * g_targets[extra]).sum(1)).mean()
        if len(idx):
            out = out + pair_loss(idx)
        return out

    def pair_loss(idx: np.ndarray) -> torch.Tensor:
        rows = q_rows[idx]
        q = encoder(take(ids, idx))
        t = encoder(take(title_ids, rows.numpy()))
        distil = (1 - (q * q_targets[idx]).sum(1)).mean() + (1 - (t * p_targets[rows]).sum(1)).mean()
        if not use_pairs:
            return distil
        logits = q @ p_targets[rows].T / CONTRASTIVE_TEMPERATURE
        same = rows.unsqueeze(0) == rows.unsqueeze(1)
        logits = logits.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
        return distil + CONTRASTIVE_WEIGHT * F.cross_entropy(logits, torch.arange(len(idx)))

    total = n + (len(general[0]) if general is not None else 0)
    history = fit(
        encoder, total, loss, preset.epochs, preset.batch_size, preset.learning_rate, seed, "encoder"
    )
    return encoder, history


def encode_queries(encoder: QueryEncoderStudent, featurizer: Featurizer, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return encoder(torch.from_numpy(featurizer.batch_ids(texts))).numpy()


def write_index(product_vecs: np.ndarray, path: Path) -> ProductIndex:
    """usearch HNSW, cosine, f16; key = row * views + view (see server/runtime/index.py)."""
    n, views, dim = product_vecs.shape
    index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128)
    index.add(np.arange(n * views, dtype=np.uint64), product_vecs.reshape(n * views, dim))
    index.save(str(path))
    return ProductIndex(path, views)


def exact_top(query_vecs: np.ndarray, product_vecs: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k product rows by best view."""
    scores = np.einsum("qd,pvd->qpv", query_vecs, product_vecs).max(axis=2)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def evaluate_retrieval(
    targets: np.ndarray,
    teacher_query_vecs: np.ndarray,
    student_query_vecs: np.ndarray,
    product_vecs: np.ndarray,
    index: ProductIndex | None = None,
) -> dict[str, float]:
    """JD protocol: a held-out title substring is the query, its own product the target. The teacher ranks
    exactly; the student through the served index when one is given."""
    teacher_top = exact_top(teacher_query_vecs, product_vecs)
    if index is not None:
        student_top = np.stack([index.search(v, 10)[0] for v in student_query_vecs])
    else:
        student_top = exact_top(student_query_vecs, product_vecs)
    return {
        "teacher_recall_at_10": round(recall_at_k(teacher_top, targets, 10), 4),
        "student_recall_at_10": round(recall_at_k(student_top, targets, 10), 4),
        "teacher_mrr": round(mrr(teacher_top, targets), 4),
        "student_mrr": round(mrr(student_top, targets), 4),
        "student_teacher_overlap_at_10": round(overlap_at_k(teacher_top, student_top, 10), 4),
        "student_teacher_mean_cosine": round(
            float((teacher_query_vecs * student_query_vecs).sum(1).mean()), 4
        ),
    }


@dataclass
class RetrievalResult:
    product_vecs: np.ndarray
    encoder: torch.nn.Module
    eval_targets: np.ndarray
    eval_teacher_vecs: np.ndarray
    eval_texts: list[str]
    teacher_name: str
    train_queries: list = field(default_factory=list)
    train_targets: np.ndarray | None = None
    query_student: TransformerStudent | None = None
    """The transformer query tower that Search and EmbedQuery serve, when the preset asks for one."""
    query_tokenizer: Tokenizer | None = None
    general: tuple[list[str], np.ndarray] | None = None
    """The general distillation texts and the product teacher's vectors of them, when the preset uses them
    (query_student.general_set)."""
    query_static: StaticStudent | None = None
    """The static word-piece model whose vectors the relevance cosine feature takes, when the preset asks
    for it (Preset.methods.relevance_cosine "query_static")."""


def train_retrieval(
    data: TrainingData, featurizer: Featurizer, preset: Preset, seed: int, engine: LabelEngine | None = None
) -> RetrievalResult:
    """The big teacher embeds products (several views each) and the training queries; the student learns
    to put queries where the teacher does. `engine` runs those two bulk encodings (local or Ray)."""
    name = preset.methods.product_teacher
    bulk = engine or LabelEngine()
    teacher = SentenceTeacher(teacher_dir(name))
    product_vecs = embed_products(
        lambda texts: bulk.encode(name, texts, local=teacher, desc="teacher: products"),
        data.catalogue,
        preset.methods.views,
    )
    labels = data.product_labels.tolist()
    train_q = title_substrings(
        data.titles, labels, data.train_rows, preset.queries_per_product, featurizer, seed
    )
    eval_q = title_substrings(data.titles, labels, data.heldout_rows, 3, featurizer, seed + 1)
    targets = bulk.encode(name, [q.text for q in train_q], local=teacher, desc="teacher: queries")

    def encode(texts: list[str]) -> np.ndarray:
        return bulk.encode(name, texts, local=teacher, desc="teacher: query student texts")

    transformer = preset.query_student == "transformer"
    static = preset.methods.relevance_cosine == "query_static"
    general = (
        general_set(data, encode, preset, seed)
        if transformer or static or preset.methods.encoder_general_texts
        else None
    )
    # What the hashed encoder learns from (and the result keeps for the report's variants of it).
    encoder_general = general if preset.methods.encoder_general_texts else None
    encoder, _ = train_query_encoder(
        train_q, targets, product_vecs, data.titles, featurizer, preset, seed, encoder_general
    )
    student = tokenizer = static_student = None
    if transformer or static:
        texts, all_targets = distillation_set(
            data, [q.text for q in train_q], product_vecs[:, 0], encode, preset, seed, targets, general
        )
        if transformer:
            student, tokenizer, _ = train_query_student(texts, all_targets, preset, seed)
        if static:
            static_student, _, _ = train_static_student(
                minilm_dir(), texts, all_targets, preset.query_static_epochs, seed
            )
    return RetrievalResult(
        product_vecs,
        encoder,
        np.array([q.product_row for q in eval_q]),
        teacher.encode([q.text for q in eval_q], desc="teacher: held-out queries"),
        [q.text for q in eval_q],
        TEACHERS[preset.methods.product_teacher],
        train_q,
        targets,
        student,
        tokenizer,
        encoder_general,
        static_student,
    )


@dataclass
class RetrievalExport:
    """What the retrieval stage puts in the bundle besides its files: its evaluation, the gate's paired
    samples, and the manifest records of the transformer query student and the lexical index."""

    evaluation: dict[str, Any]
    paired: Paired
    query_student: dict[str, Any] | None
    lexical: LexicalComponent
    arrays: dict[str, ArraySpec]
    query_static: dict[str, Any] | None = None
    """The static word-piece model's export record, when it ships (the relevance cosine's query model)."""


def export_retrieval(
    r: RetrievalResult,
    featurizer: Featurizer,
    data: TrainingData,
    out: Path,
    tmp: Path,
    preset: Preset,
    seed: int,
) -> RetrievalExport:
    ids = featurizer.batch_ids(r.eval_texts)
    export_onnx(r.encoder, torch.from_numpy(ids[:2]), "ids", "embedding", tmp / "query_encoder.onnx")
    fp32 = run_onnx(tmp / "query_encoder.onnx", "query_encoder", "ids", ids)
    gate = quantize_with_gate(
        tmp / "query_encoder.onnx",
        out / "query_encoder.onnx",
        lambda path: float((run_onnx(path, "query_encoder", "ids", ids) * fp32).sum(1).min()),
        PARITY["query_encoder"],
    )
    int8 = run_onnx(out / "query_encoder.onnx", "query_encoder", "ids", ids)
    index = write_index(r.product_vecs, out / "index.usearch")
    ids = [p.id for p in data.catalogue.products]
    catalogue = product_arrays(
        ids, data.titles, data.product_labels, len(data.labels), featurizer, lambda rows: r.product_vecs[rows]
    )
    arrays = save_product_arrays(out, catalogue, out / "index.usearch")
    hashed = evaluate_retrieval(r.eval_targets, r.eval_teacher_vecs, int8, r.product_vecs, index)
    served, student_gate = int8, None
    if r.query_student is not None and r.query_tokenizer is not None:
        student_gate, served = export_query_student(
            r.query_student, r.query_tokenizer, r.eval_texts, tmp, out
        )
        student_gate["teacher_layers"] = list(preset.query_student_layers)
        student_gate["catalogue_tokens_kept"] = round(
            kept_token_share(r.query_student, r.query_tokenizer, data.titles), 4
        )
    static_gate = None
    if r.query_static is not None:
        static_gate, static_vecs = export_static_student(r.query_static, r.eval_texts, tmp, out)
        static_gate["teacher_cosine"] = round(float((static_vecs * r.eval_teacher_vecs).sum(1).mean()), 4)
    result = evaluate_retrieval(r.eval_targets, r.eval_teacher_vecs, served, r.product_vecs, index)
    result["query_student"] = "transformer" if student_gate else "hashed"
    if static_gate:
        result["query_static_export"] = static_gate
    if student_gate:
        result["query_student_export"] = student_gate
        result["hashed_encoder"] = hashed  # still shipped: relevance embeds candidate titles with it
    lexical, names = build_lexical(data.titles, out)
    heldout = np.asarray(data.heldout_rows, dtype=np.int64)
    heldout = heldout[data.product_labels[heldout] >= 0]  # a product of no known category has no answer
    titles = [data.titles[i] for i in heldout]
    similar = SimilarProducts(
        titles,
        encode_onnx(out / QUERY_STUDENT_FILE, titles)
        if student_gate
        else run_onnx(out / "query_encoder.onnx", "query_encoder", "ids", featurizer.batch_ids(titles)),
        heldout,
        data.product_labels,
    )
    component, result["search_modes"] = choose_mode(
        r.eval_texts, served, r.eval_targets, similar, index, lexical, names, seed
    )
    student_top = ranked(component.default_mode, r.eval_texts, served, index, lexical, component)
    paired = Paired(
        f"recall@10 of the held-out product ({component.default_mode} Search)",
        (student_top == r.eval_targets[:, None]).any(1).astype(float),
        (exact_top(r.eval_teacher_vecs, r.product_vecs) == r.eval_targets[:, None]).any(1).astype(float),
    )
    result["retention"] = round(result["student_recall_at_10"] / max(result["teacher_recall_at_10"], 1e-9), 4)
    result["int8_fp32_min_cosine"] = round(float((int8 * fp32).sum(1).min()), 4)
    result["quantization"] = gate
    result["product_teacher"] = r.teacher_name
    result["views"] = preset.methods.views
    result["eval_queries"] = len(r.eval_texts)
    return RetrievalExport(result, paired, student_gate, component, arrays, static_gate)
