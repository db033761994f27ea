"""The online tower of the asymmetric two-tower as a small transformer: layers of all-MiniLM-L6-v2 (layer
dropping: the first, a middle one and the last by default), distilled to put a query where the product
teacher puts it.

The hashed n-gram query encoder (training/retrieval.py) knows only the words of its training texts, so on
real shoppers' queries it drifts from its teacher. This student keeps MiniLM's own sub-word embeddings and
attention, so a word it never saw in training still lands near where the teacher puts it. It is served
through `tokenizers` with the bundle's tokenizer.json (server/query_tokens.py), truncated to MAX_TOKENS.

Its distillation set is unlabelled text: the catalogue's title substrings (JD pre-training), the titles,
and words of the tokenizer's own vocabulary alone and before category names (training/data/augment.py),
so that it learns general words no catalogue here holds. The targets are the teacher's vectors; the loss
is 1 - cosine.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from server.query_tokens import PAD_ID, QueryTokenizer
from server.runtime.onnx import OnnxModel, ThreadSettings
from training.data.augment import vocabulary_queries, word_runs
from training.data.dataset import TrainingData
from training.gate import PARITY
from training.onnx_teacher import quantize_with_gate
from training.presets import Preset
from training.smooth_quant import smooth_activations
from training.teachers import minilm_dir
from training.transformer_student import (
    MAX_TOKENS,
    TransformerStudent,
    build_transformer_student,
    count_parameters,
    distil_transformer_student,
    encode_texts,
    factorized_student,
    fused_attention,
    load_tokenizer,
    whole_words,
)

FILE = "query_student.onnx"


def distillation_texts(data: TrainingData, tokenizer: Tokenizer, n_vocabulary: int, seed: int) -> list[str]:
    """The general part of the distillation set: half vocabulary words alone and before category names,
    half random runs of two to four whole words of the vocabulary ("lacoste tennis", "usb charger cable
    white"), so that words and word pairs no catalogue here holds are still put where the teacher puts
    them."""
    ids = tokenizer.get_vocab()
    vocab = sorted(ids, key=ids.get)
    texts = vocabulary_queries(vocab, data.labels, data.descriptions, n_vocabulary // 2, seed)
    return texts + word_runs(whole_words(vocab), n_vocabulary - len(texts), seed)


def distillation_set(
    data: TrainingData,
    substrings: Sequence[str],
    title_vecs: np.ndarray,
    encode: Callable[[list[str]], np.ndarray],
    preset: Preset,
    seed: int,
    substring_vecs: np.ndarray | None = None,
    general: tuple[list[str], np.ndarray] | None = None,
) -> tuple[list[str], np.ndarray]:
    """The query student's texts and teacher vectors: a sample of the catalogue's title substrings (JD
    pre-training; `substring_vecs` when the caller has them all, else the sample is encoded), every title,
    and the general texts (`general`, texts and vectors, when the caller has them: general_set). `encode`
    is the product teacher."""
    texts, vecs = general if general is not None else general_set(data, encode, preset, seed)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(substrings))[: preset.query_student_catalogue_texts])
    picked = [substrings[i] for i in sample]
    picked_vecs = encode(picked) if substring_vecs is None else substring_vecs[sample]
    return picked + list(data.titles) + texts, np.concatenate([picked_vecs, title_vecs, vecs]).astype(
        np.float32
    )


def general_set(
    data: TrainingData, encode: Callable[[list[str]], np.ndarray], preset: Preset, seed: int
) -> tuple[list[str], np.ndarray]:
    """The general distillation texts (distillation_texts, the preset's count) and the product teacher's
    vectors of them."""
    texts = distillation_texts(data, load_tokenizer(minilm_dir()), preset.query_student_vocabulary, seed)
    return texts, np.asarray(encode(texts), dtype=np.float32)


def train_query_student(
    texts: Sequence[str], targets: np.ndarray, preset: Preset, seed: int
) -> tuple[TransformerStudent, Tokenizer, list[float]]:
    """MiniLM's layers `preset.query_student_layers`, with a projection head when the product
    teacher's space is not MiniLM's (mpnet: 768 dims), over the whole vocabulary factorized or a vocabulary
    pruned to the budget (preset.query_student_embedding), distilled on (texts, teacher vectors)."""
    torch.manual_seed(seed)
    out_dim = None if targets.shape[1] == 384 else targets.shape[1]
    layers = preset.query_student_layers
    if preset.query_student_embedding == "factorized":
        student, tokenizer = factorized_student(minilm_dir(), layers, out_dim)
    else:
        student, tokenizer = build_transformer_student(minilm_dir(), texts, layers, out_dim=out_dim)
    history = distil_transformer_student(
        student,
        tokenizer,
        texts,
        embedding_targets=targets,
        epochs=preset.query_student_epochs,
        batch_size=128,
        # Warm-up and linear decay from twice the constant rate used before: the same epochs end at a lower
        # distillation loss, a little nearer the teacher on real queries.
        learning_rate=3e-4,
        warmup=0.06,
        seed=seed,
    )
    return student, tokenizer, history


class _IdsOnly(torch.nn.Module):
    """The served graph: the attention mask is derived from the ids ([PAD] = 0), so the server feeds one
    matrix and the micro-batcher's zero-padding is [PAD] padding (server/query_tokens.py)."""

    def __init__(self, student: TransformerStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.student(input_ids, (input_ids != PAD_ID).to(torch.int64))


def export_ids_only(student: TransformerStudent, tokenizer: Tokenizer, path: Path) -> None:
    """fp32 ONNX: int64 `input_ids` [batch, tokens] -> `embedding` [batch, dim]."""
    ids, _ = encode_texts(tokenizer, ["example query for tracing", "a second one"])
    student.eval()
    with warnings.catch_warnings(), fused_attention(student):
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            _IdsOnly(student),
            (torch.from_numpy(ids),),
            str(path),
            input_names=["input_ids"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
            opset_version=17,
            custom_opsets={"com.microsoft": 1},
            dynamo=False,
        )


def query_tokenizer() -> QueryTokenizer:
    """The server's own QueryTokenizer over the tokenizer.json the bundle ships (MiniLM's), at MAX_TOKENS:
    the ids Search will feed the exported student."""
    return QueryTokenizer(minilm_dir() / "tokenizer.json", MAX_TOKENS)


def query_feeds(texts: Sequence[str], batch: int = 256) -> list[dict[str, np.ndarray]]:
    """The exported student's inputs for `texts`, in batches, from `query_tokenizer`, so the parity gate,
    the smoothing's calibration and the evaluation see the ids Search will feed."""
    tokens = query_tokenizer()
    return [{"input_ids": tokens.ids(list(texts[i : i + batch]))} for i in range(0, len(texts), batch)]


def encode_feeds(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """The exported student's vectors of `feeds` (query_feeds)."""
    model = OnnxModel(path, "query_student", ThreadSettings(intra_op=2))
    out = [model.run(feed) for feed in feeds]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def encode_onnx(path: Path, texts: Sequence[str]) -> np.ndarray:
    """The exported student's vectors of `texts`."""
    return encode_feeds(path, query_feeds(texts))


def export_query_student(
    student: TransformerStudent, tokenizer: Tokenizer, check_texts: Sequence[str], tmp: Path, out: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """fp32 ONNX, its activations smoothed for int8 (training/smooth_quant.py, calibrated on `check_texts`),
    then the first int8 scheme whose minimum cosine to the fp32 export passes PARITY; returns the gate's
    record and the shipped model's vectors of `check_texts`."""
    export_ids_only(student, tokenizer, tmp / FILE)
    feeds = query_feeds(check_texts)
    fp32 = encode_feeds(tmp / FILE, feeds)
    smoothed = tmp / f"smoothed_{FILE}"
    smoothing = smooth_activations(tmp / FILE, smoothed, feeds)
    gate = quantize_with_gate(
        smoothed,
        out / FILE,
        lambda path: float((encode_feeds(path, feeds) * fp32).sum(1).min()),
        PARITY["query_encoder"],
    )
    gate["smoothing"] = smoothing
    gate["parameters"] = count_parameters(student)
    gate["layers"] = len(student.layers)
    gate["max_tokens"] = MAX_TOKENS
    return gate, encode_feeds(out / FILE, feeds)


def kept_token_share(student: TransformerStudent, tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    """Share of the texts' word pieces that the pruned vocabulary keeps (the rest are served as [UNK])."""
    if student.remap is None:
        return 1.0
    unk = int(student.remap[tokenizer.token_to_id("[UNK]")])
    remap = student.remap.numpy()
    ids = [
        i
        for e in tokenizer.encode_batch(list(texts))
        for i, m in zip(e.ids, e.attention_mask, strict=True)
        if m
    ]
    real_unk = tokenizer.token_to_id("[UNK]")
    kept = [remap[i] != unk or i == real_unk for i in ids]
    return float(np.mean(kept)) if kept else 1.0
