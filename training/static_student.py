"""A static word-piece query model for the relevance cosine feature: one vector per word piece of MiniLM's
whole vocabulary, and a text's vector the mean of its pieces' (Model2Vec's distillation, then tuned as
Tokenlearn tunes it).

ScoreRelevance's cosine feature needs the query's vector in the product teacher's space on every call. The
transformer query student puts it there closely but costs most of a millisecond; the hashed n-gram encoder
costs microseconds but knows only its training texts' words. This model costs a lookup and a mean, like the
encoder, yet every word piece starts where MiniLM puts it alone: each row is MiniLM's own embedding of
"[CLS] piece [SEP]". The rows are then tuned on the query student's distillation set (catalogue substrings,
titles and general vocabulary texts, with the product teacher's vectors) so that means of them land where
the teacher puts whole texts. It is served through `tokenizers` with the bundle's tokenizer.json, as the
query student is, and exported as a Gather and a masked mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from server.manifest import KINDS
from server.query_tokens import PAD_ID
from training.export import export_onnx
from training.gate import PARITY
from training.onnx_teacher import quantize_with_gate
from training.query_student import encode_feeds, query_feeds
from training.transformer_student import MAX_TOKENS, encode_texts, full_encoder, load_tokenizer

FILE = "query_static.onnx"
KIND = KINDS["query_static"][0]
"""The manifest's kind for this model (server/manifest_parts.py defines it)."""


class StaticStudent(nn.Module):
    """input_ids [batch, tokens] (0 = [PAD]) -> the unit mean of their rows, projected into the product
    teacher's space when it is not MiniLM's."""

    def __init__(self, table: torch.Tensor, out_dim: int | None = None) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(table.clone(), freeze=False)
        self.head = None if out_dim is None else nn.Linear(table.shape[1], out_dim, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != PAD_ID).to(self.table.weight.dtype).unsqueeze(-1)
        summed = (self.table(input_ids) * mask).sum(1)
        pooled = summed / mask.sum(1).clamp(min=1.0)
        if self.head is not None:
            pooled = self.head(pooled)
        return F.normalize(pooled, dim=-1)


def piece_table(model_dir: Path, pieces: Sequence[int] | None = None, batch: int = 1024) -> torch.Tensor:
    """[pieces, hidden]: MiniLM's sentence embedding of each word piece alone ("[CLS] piece [SEP]"), for
    every piece of its vocabulary in id order unless `pieces` names some."""
    encoder = full_encoder(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    wanted = torch.arange(tokenizer.get_vocab_size()) if pieces is None else torch.tensor(list(pieces))
    rows = []
    with torch.inference_mode():
        for start in range(0, len(wanted), batch):
            part = wanted[start : start + batch]
            ids = torch.stack([torch.full_like(part, cls), part, torch.full_like(part, sep)], 1)
            rows.append(encoder(ids, torch.ones_like(ids)))
    return torch.cat(rows)


def distil_static_student(
    student: StaticStudent,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    epochs: int,
    seed: int,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
) -> list[float]:
    """Tunes the rows (and head) so each text's vector lands on its target (loss 1 - cosine); the mean loss
    of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    ids, _ = encode_texts(tokenizer, texts)
    x, y = torch.from_numpy(ids), torch.from_numpy(np.asarray(targets, dtype=np.float32))
    optimizer = torch.optim.Adam(student.parameters(), lr=learning_rate)
    history = []
    student.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            at = order[start : start + batch_size]
            loss = (1 - (student(x[at]) * y[at]).sum(1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(at)
        history.append(total / max(len(x), 1))
    student.eval()
    return history


def train_static_student(
    model_dir: Path, texts: Sequence[str], targets: np.ndarray, epochs: int, seed: int
) -> tuple[StaticStudent, Tokenizer, list[float]]:
    """MiniLM's word pieces as rows, tuned on (texts, the product teacher's vectors of them)."""
    torch.manual_seed(seed)
    out_dim = None if targets.shape[1] == 384 else targets.shape[1]
    student = StaticStudent(piece_table(model_dir), out_dim)
    tokenizer = load_tokenizer(model_dir)
    history = distil_static_student(student, tokenizer, texts, targets, epochs, seed)
    return student, tokenizer, history


def export_static_onnx(student: StaticStudent, path: Path) -> None:
    """fp32 ONNX: int64 `input_ids` [batch, tokens] -> `embedding` [batch, dim]."""
    export_onnx(student, torch.ones((2, 4), dtype=torch.int64), "input_ids", "embedding", path)


def export_static_student(
    student: StaticStudent, check_texts: Sequence[str], tmp: Path, out: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """fp32 ONNX (export_static_onnx), then the first int8 scheme
    whose minimum cosine to it passes PARITY; returns the gate's record and the shipped model's vectors of
    `check_texts`, fed by the server's own tokenizer (query_feeds)."""
    export_static_onnx(student, tmp / FILE)
    feeds = query_feeds(check_texts)
    fp32 = encode_feeds(tmp / FILE, feeds)
    gate = quantize_with_gate(
        tmp / FILE,
        out / FILE,
        lambda path: float((encode_feeds(path, feeds) * fp32).sum(1).min()),
        PARITY["query_encoder"],
    )
    gate["max_tokens"] = MAX_TOKENS
    gate["rows"] = int(student.table.weight.shape[0])
    return gate, encode_feeds(out / FILE, feeds)
