"""A small transformer student: the bottom layers of all-MiniLM-L6-v2 over a vocabulary pruned to the data.

It is the alternative to the hashed n-gram feed-forward students of students.py: slower per call but it keeps
word order and the teacher's own sub-word embeddings. Every student must stay under 11M parameters, and
MiniLM's word-embedding table alone is 30522x384 = 11.7M, so the table keeps only the rows of the token ids
that the training texts use. The original tokenizer.json is kept unchanged; an int64 old-id -> new-id remap
(a buffer, not a parameter) is the first Gather of the graph and sends every dropped id to [UNK].

The encoder is written out in plain torch ops (Gather, MatMul, Softmax, LayerNorm, Erf) rather than taken
from transformers, so that the legacy ONNX exporter traces exactly the trained computation with dynamic batch
and sequence axes; the same module with all layers and the full vocabulary exports the teacher itself.

At export each layer's self-attention becomes one onnxruntime `com.microsoft.Attention` node (Q, K and V in
one weight), which dynamic quantization turns into one QAttention. Traced op by op, a query's attention is
about forty small nodes per layer (reshapes, transposes, shape arithmetic) whose per-node cost outweighs
their arithmetic at a query's 8 to 32 tokens (the report's latency part times the shipped graph).
tests/training/test_transformer_student.py checks the fused graph against the module, fp32 and int8.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from training.students import distillation_loss, fit

MAX_TOKENS = 32
"""Search queries are short; 32 word pieces cover them and bound the attention cost."""
PARAMETER_BUDGET = 11_000_000
"""10% of BERT-base: the ceiling for every student."""
FREQUENT_IDS = 1000
"""Besides every id seen in the texts, keep this many of the most frequent general word pieces."""
FIRST_WORD_ID = 1996
"""In BERT's uncased vocab, ids from 1996 ("the") on are whole-word pieces in roughly descending frequency
(below are [unused*] slots and single characters): the next FREQUENT_IDS ids are its most frequent words."""
_MASK_VALUE = -1e9


def whole_words(vocab: list[str]) -> list[str]:
    """The whole alphabetic words of three letters or more in a BERT uncased vocabulary, in id order."""
    return [w for w in vocab[FIRST_WORD_ID:] if w.isalpha() and len(w) >= 3]


def load_tokenizer(model_dir: Path, max_length: int = MAX_TOKENS) -> Tokenizer:
    """The teacher's own tokenizer.json, truncating to `max_length` and padding to the longest in a batch."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) as int64 matrices, padded to the longest text."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, heads: int
) -> torch.Tensor:
    """Multi-head scaled dot-product attention of (batch, seq, hidden) projections; `bias` is additive."""

    def split(x: torch.Tensor) -> torch.Tensor:
        # (batch, seq, hidden) -> (batch, heads, seq, head_dim); -1 keeps batch and seq dynamic in the graph.
        return x.reshape(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(q.shape[-1] // heads) + bias
    return (scores.softmax(dim=-1) @ split(v)).transpose(1, 2).reshape(q.shape)


class _Layer(nn.Module):
    """One post-LayerNorm BERT layer, with the teacher's parameter names so its weights load directly."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`bias` is the additive attention mask; `mask` (int32 [batch, tokens], 1 = a token) is given only
        when exporting, and then attention is traced as one fused onnxruntime node (_FusedAttention)."""
        if mask is None:
            context = _attention(self.query(x), self.key(x), self.value(x), bias, self.heads)
        else:
            weight = torch.cat([self.query.weight, self.key.weight, self.value.weight]).T.contiguous()
            qkv_bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
            context = _FusedAttention.apply(x, weight, qkv_bias, mask, bias, self.heads)
        x = self.attention_norm(x + self.attention_out(context))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class _FusedAttention(torch.autograd.Function):
    """Self-attention with Q, K and V in one [hidden, 3 x hidden] weight. In torch it computes exactly what
    _Layer does; traced for ONNX it is onnxruntime's contrib `Attention` node (2D 0/1 `mask_index`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: object,
        x: torch.Tensor,
        weight: torch.Tensor,
        qkv_bias: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor,
        heads: int,
    ) -> torch.Tensor:
        q, k, v = (x @ weight + qkv_bias).chunk(3, dim=-1)
        return _attention(q, k, v, bias, heads)

    @staticmethod
    def symbolic(g, x, weight, qkv_bias, mask, bias, heads):  # type: ignore[no-untyped-def]
        out = g.op(
            "com.microsoft::Attention",
            x,
            weight,
            qkv_bias,
            mask,
            num_heads_i=heads,
            mask_filter_value_f=_MASK_VALUE,
        )
        out.setType(x.type())  # same shape and dtype as the input: tells the exporter what it cannot infer
        return out


class TransformerStudent(nn.Module):
    """(input_ids, attention_mask) in the teacher tokenizer's ids -> class probabilities (`num_classes`) or
    an L2-normalised mean-pooled embedding (`num_classes=None`, projected to `out_dim` if given)."""

    def __init__(
        self,
        vocab_size: int,
        hidden: int = 384,
        num_layers: int = 2,
        heads: int = 12,
        intermediate: int = 1536,
        max_positions: int = 512,
        eps: float = 1e-12,
        remap: torch.Tensor | None = None,
        num_classes: int | None = None,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and out_dim is not None:
            raise ValueError("out_dim is for embedding students; a classifier's output size is num_classes")
        self.remap: torch.Tensor | None
        self.register_buffer("remap", remap)
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        # Set by factorize_embeddings: a low-rank table and its projection to `hidden`.
        self.word_projection: nn.Linear | None = None
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        # All inputs are single segments: only row 0 of the teacher's token-type table is ever used.
        self.token_type = nn.Parameter(torch.zeros(hidden))
        self.embedding_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(_Layer(hidden, heads, intermediate, eps) for _ in range(num_layers))
        self.num_classes = num_classes
        self.fused_attention = False
        """Set only while exporting (fused_attention()): attention is traced as one onnxruntime node."""
        self.head: nn.Module | None = None
        if num_classes is not None:
            self.head = nn.Linear(hidden, num_classes)
        elif out_dim is not None:
            self.head = nn.Linear(hidden, out_dim)

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids = self.remap[input_ids] if self.remap is not None else input_ids
        # cumsum rather than arange(seq_len): the exported graph then has no traced shape constants.
        positions = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
        words = self.word_embeddings(ids)
        if self.word_projection is not None:
            words = self.word_projection(words)
        x = words + self.position_embeddings(positions) + self.token_type
        x = self.embedding_norm(x)
        mask = attention_mask.to(x.dtype)
        bias = ((1.0 - mask) * _MASK_VALUE)[:, None, None, :]
        fused = attention_mask.to(torch.int32) if self.fused_attention else None
        for layer in self.layers:
            x = layer(x, bias, fused)
        weights = mask.unsqueeze(-1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Classifier logits (training); only for students built with num_classes."""
        if self.num_classes is None or self.head is None:
            raise ValueError("an embedding student has no logits")
        return self.head(self._pooled(input_ids, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.num_classes is not None:
            return torch.softmax(self.logits(input_ids, attention_mask), dim=-1)
        pooled = self._pooled(input_ids, attention_mask)
        if self.head is not None:
            pooled = self.head(pooled)
        return F.normalize(pooled, dim=-1)


def count_parameters(student: nn.Module) -> int:
    """Trainable parameters; the remap is a buffer, so it is not counted."""
    return sum(p.numel() for p in student.parameters() if p.requires_grad)


def _keep_ids(
    tokenizer: Tokenizer, texts: Sequence[str], vocab_size: int, budget_rows: int
) -> tuple[np.ndarray, int]:
    """Sorted old ids to keep, and the new id of [UNK]: specials, the most frequent general word pieces,
    the ids seen in `texts` (most frequent first), then further general word pieces, for as many rows as
    the parameter budget allows."""
    specials = sorted(set(_special_ids(tokenizer)) | {tokenizer.token_to_id("[UNK]")})
    counts: Counter[int] = Counter()
    for encoding in tokenizer.encode_batch(list(texts)):
        counts.update(encoding.ids)
    frequent = range(FIRST_WORD_ID, min(FIRST_WORD_ID + FREQUENT_IDS, vocab_size))
    keep: dict[int, None] = dict.fromkeys([*specials, *frequent])
    for token_id, _ in counts.most_common():
        if len(keep) >= budget_rows:
            break
        keep.setdefault(token_id)
    # Rows the budget still allows go to general word pieces in the vocabulary's (frequency) order: a real
    # catalogue's words that the training texts lack are then still themselves, not [UNK].
    for token_id in range(FIRST_WORD_ID, vocab_size):
        if len(keep) >= budget_rows:
            break
        keep.setdefault(token_id)
    kept = np.array(sorted(keep), dtype=np.int64)
    unk = int(np.searchsorted(kept, tokenizer.token_to_id("[UNK]")))
    return kept, unk


def _special_ids(tokenizer: Tokenizer) -> list[int]:
    return [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]


def _load_teacher(model_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise ValueError(f"{model_dir}: a BERT-style teacher is expected, not {config.get('model_type')!r}")
    return config, load_file(str(model_dir / "model.safetensors"))


def _build(
    config: dict,
    weights: dict[str, torch.Tensor],
    layers: int | Sequence[int],
    kept: np.ndarray | None,
    unk: int,
    num_classes: int | None,
    out_dim: int | None,
) -> TransformerStudent:
    """A student from the teacher's `layers` (their indices, bottom first; an int n is the first n) and the
    word-embedding rows `kept` (all if None); the head, if any, starts from PyTorch's default
    initialisation."""
    picked = list(range(layers)) if isinstance(layers, int) else list(layers)
    total = config["num_hidden_layers"]
    if not picked or sorted(set(picked)) != picked or picked[0] < 0 or picked[-1] >= total:
        raise ValueError(f"layers must be distinct teacher layers in 0..{total - 1}, ascending, not {layers}")
    num_layers = len(picked)
    remap = None
    if kept is not None:
        remap = torch.full((config["vocab_size"],), unk, dtype=torch.int64)
        remap[torch.from_numpy(kept)] = torch.arange(len(kept))
    vocab = config["vocab_size"] if kept is None else len(kept)
    student = TransformerStudent(
        vocab,
        hidden=config["hidden_size"],
        num_layers=num_layers,
        heads=config["num_attention_heads"],
        intermediate=config["intermediate_size"],
        max_positions=config["max_position_embeddings"],
        eps=config.get("layer_norm_eps", 1e-12),
        remap=remap,
        num_classes=num_classes,
        out_dim=out_dim,
    )
    word = weights["embeddings.word_embeddings.weight"]
    state = {
        "word_embeddings.weight": word if kept is None else word[torch.from_numpy(kept)],
        "position_embeddings.weight": weights["embeddings.position_embeddings.weight"],
        "token_type": weights["embeddings.token_type_embeddings.weight"][0],
        "embedding_norm.weight": weights["embeddings.LayerNorm.weight"],
        "embedding_norm.bias": weights["embeddings.LayerNorm.bias"],
    }
    names = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    for i, layer in enumerate(picked):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{kind}"] = weights[f"encoder.layer.{layer}.{theirs}.{kind}"]
    missing, unexpected = student.load_state_dict(state, strict=False)
    left = [m for m in missing if not m.startswith(("head.", "remap"))]
    if left or unexpected:
        raise RuntimeError(f"teacher weights do not fit: missing {left}, unexpected {unexpected}")
    return student.eval()


def build_transformer_student(
    teacher_dir: Path,
    texts: Sequence[str],
    num_layers: int | Sequence[int] = 2,
    num_classes: int | None = None,
    out_dim: int | None = None,
) -> tuple[TransformerStudent, Tokenizer]:
    """The teacher's bottom `num_layers` layers (or those listed) over the vocabulary that `texts` use (plus
    specials and the most frequent general words), cut further by frequency if needed to stay under
    PARAMETER_BUDGET."""
    config, weights = _load_teacher(teacher_dir)
    tokenizer = load_tokenizer(teacher_dir)
    # Size the body with a one-row vocabulary to learn how many embedding rows the budget leaves.
    probe = _build(config, weights, num_layers, np.array([0]), 0, num_classes, out_dim)
    budget_rows = (PARAMETER_BUDGET - 1 - count_parameters(probe)) // config["hidden_size"] + 1
    if budget_rows < len(_special_ids(tokenizer)) + 1:
        raise ValueError(f"{num_layers} layers leave no room for a vocabulary under {PARAMETER_BUDGET}")
    kept, unk = _keep_ids(tokenizer, texts, config["vocab_size"], budget_rows)
    return _build(config, weights, num_layers, kept, unk, num_classes, out_dim), tokenizer


def factorized_student(
    teacher_dir: Path, layers: int | Sequence[int], out_dim: int | None = None
) -> tuple[TransformerStudent, Tokenizer]:
    """The teacher's `layers` (indices, or an int n for the bottom n) over its WHOLE vocabulary, the
    word-embedding table factorized by truncated SVD (vocab x rank, then rank x hidden) at the largest rank
    PARAMETER_BUDGET allows. Unlike a pruned vocabulary, no word piece of a real catalogue or query becomes
    [UNK]."""
    config, weights = _load_teacher(teacher_dir)
    student = _build(config, weights, layers, None, 0, None, out_dim)
    table = student.word_embeddings.weight.detach()
    vocab, hidden = table.shape
    body = count_parameters(student) - table.numel()
    rank = min(hidden, (PARAMETER_BUDGET - 1 - body) // (vocab + hidden))
    if rank < 16:
        raise ValueError(
            f"{len(student.layers)} layers leave no room for a factorized vocabulary under {PARAMETER_BUDGET}"
        )
    u, singular, vt = torch.linalg.svd(table, full_matrices=False)
    student.word_embeddings = nn.Embedding.from_pretrained(u[:, :rank] * singular[:rank], freeze=False)
    student.word_projection = nn.Linear(rank, hidden, bias=False)
    with torch.no_grad():
        student.word_projection.weight.copy_(vt[:rank].T)
    return student.eval(), load_tokenizer(teacher_dir)


def full_encoder(model_dir: Path) -> TransformerStudent:
    """The whole teacher (every layer, full vocabulary, no head) as a TransformerStudent: its embedding is
    the sentence-transformers mean-pooled, normalised sentence embedding."""
    config, weights = _load_teacher(model_dir)
    return _build(config, weights, config["num_hidden_layers"], None, 0, None, None)


def distil_transformer_student(
    student: TransformerStudent,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    soft_targets: np.ndarray | None = None,
    embedding_targets: np.ndarray | None = None,
    hard_labels: np.ndarray | None = None,
    soft_weight: float = 0.7,
    temperature: float = 2.0,
    epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    seed: int = 0,
    warmup: float | None = None,
) -> list[float]:
    """Fine-tunes the student on the teacher's outputs: softened logits (KL, mixed with hard-label CE by
    `soft_weight`) for a classifier, 1 - cosine to the teacher's vectors for an embedding student.
    `learning_rate` is constant, or the peak of a warm-up and linear decay over `warmup` of the steps
    (training/students.py: fit). Returns the mean loss of each epoch."""
    is_classifier = student.num_classes is not None
    if is_classifier and soft_targets is None and hard_labels is None:
        raise ValueError("a classifier student needs soft_targets and/or hard_labels")
    if not is_classifier and embedding_targets is None:
        raise ValueError("an embedding student needs embedding_targets")
    ids, mask = encode_texts(tokenizer, texts)
    soft = None if soft_targets is None else torch.as_tensor(soft_targets, dtype=torch.float32)
    target = None if embedding_targets is None else torch.as_tensor(embedding_targets, dtype=torch.float32)
    labels = None if hard_labels is None else torch.as_tensor(hard_labels, dtype=torch.int64)
    for name, array in (("soft_targets", soft), ("embedding_targets", target), ("hard_labels", labels)):
        if array is not None and len(array) != len(texts):
            raise ValueError(f"{name} has {len(array)} rows for {len(texts)} texts")

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        # Trim the batch to its longest text: padding columns cost attention compute and change nothing.
        width = max(int(mask[idx].sum(axis=1).max()), 1)
        batch_ids = torch.from_numpy(np.ascontiguousarray(ids[idx, :width]))
        batch_mask = torch.from_numpy(np.ascontiguousarray(mask[idx, :width]))
        rows = torch.from_numpy(idx)
        if not is_classifier:
            assert target is not None
            out = student(batch_ids, batch_mask)
            return (1.0 - F.cosine_similarity(out, target[rows], dim=-1)).mean()
        logits = student.logits(batch_ids, batch_mask)
        batch_labels = None if labels is None else labels[rows]
        if soft is None:
            assert batch_labels is not None
            return F.cross_entropy(logits, batch_labels, ignore_index=-1)
        return distillation_loss(logits, soft[rows], batch_labels, temperature, soft_weight)

    return fit(
        student,
        len(texts),
        loss_fn,
        epochs,
        batch_size,
        learning_rate,
        seed,
        desc="transformer student",
        warmup=warmup,
    )


@contextmanager
def fused_attention(student: TransformerStudent) -> Iterator[TransformerStudent]:
    """While exporting: each layer's attention traced as one onnxruntime Attention node."""
    student.fused_attention = True
    try:
        yield student
    finally:
        student.fused_attention = False


def export_transformer_onnx(student: TransformerStudent, tokenizer: Tokenizer, path: Path) -> None:
    """fp32 ONNX: int64 `input_ids` and `attention_mask` with dynamic batch and sequence axes, and output
    `probabilities` (classifier) or `embedding`. The tokenizer gives a realistic tracing example."""
    ids, mask = encode_texts(tokenizer, ["example query for tracing", "a second one"])
    output = "probabilities" if student.num_classes is not None else "embedding"
    axes = {0: "batch", 1: "sequence"}
    student.eval()
    with warnings.catch_warnings(), fused_attention(student):
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        torch.onnx.export(
            student,
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, output: {0: "batch"}},
            opset_version=17,
            custom_opsets={"com.microsoft": 1},
            dynamo=False,
        )
