"""Fine-tuning of sentence-transformer teachers, with the layer dropping and layer freezing of the email
reply-suggestion paper: dropping the top layers and freezing the bottom ones cut fine-tuning time without
losing quality. Freezing here saves compute, not only gradients: the frozen bottom runs once per text and its
output is cached, so each epoch runs only the top layers (BERT-family encoders such as MiniLM; other
architectures freeze without the cache)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.teachers import length_batches


def load_encoder(model_dir: Path, keep_layers: int | None = None) -> tuple[Any, nn.Module]:
    """(tokenizer, encoder) from a local folder; `keep_layers` keeps only the bottom n transformer layers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    if keep_layers is not None:
        layers = model.encoder.layer
        if not 1 <= keep_layers <= len(layers):
            raise ValueError(f"keep_layers {keep_layers}: the encoder has {len(layers)} layers")
        model.encoder.layer = nn.ModuleList(list(layers)[:keep_layers])
        model.config.num_hidden_layers = keep_layers
    return tokenizer, model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


class EncoderClassifier(nn.Module):
    """Encoder, masked mean pooling, L2 norm, then a cosine head: logits = scale * cos(text, class vector).
    With `init_head` (the class names' embeddings) it starts as the zero-shot prototype classifier."""

    def __init__(
        self, encoder: nn.Module, num_classes: int, init_head: np.ndarray | None = None, scale: float = 20.0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.head = nn.Parameter(torch.randn(num_classes, hidden) * 0.02)
        if init_head is not None:
            with torch.no_grad():
                self.head.copy_(torch.from_numpy(np.asarray(init_head, dtype=np.float32)))
        self.scale = scale

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.scale * pooled @ F.normalize(self.head, dim=-1).T

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return self.classify(mean_pool(hidden, attention_mask))


@dataclass
class FineTuneResult:
    model: nn.Module
    tokenizer: Any
    train_seconds: float
    losses: list[float]
    trainable_parameters: int
    total_parameters: int


def _batches(
    tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int
) -> list[tuple[np.ndarray, Any]]:
    """Length-sorted batches (little padding), tokenized once."""
    out = []
    for idx in length_batches([len(t) for t in texts], batch_size):
        enc = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out.append((idx, enc))
    return out


def _layer_runner(
    encoder: nn.Module, enc: Any
) -> tuple[torch.Tensor, Callable[[nn.Module, torch.Tensor], torch.Tensor]] | None:
    """The embeddings' output and a function running one transformer layer on hidden states, for the
    architectures whose layers can be called one by one (BERT family, MPNet); None for others. The mask is
    built by transformers' public masking helper, as the models build it for an encoder: a private method
    of theirs changed its signature between minor releases (5.24 to 5.25) and broke this once."""
    from transformers.masking_utils import create_bidirectional_mask

    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None or getattr(encoder.config, "is_decoder", False):
        return None
    if hasattr(encoder.encoder, "compute_position_bias"):  # MPNet: relative position bias per layer
        hidden = encoder.embeddings(input_ids=enc["input_ids"])
        mask = create_bidirectional_mask(
            config=encoder.config, inputs_embeds=hidden, attention_mask=enc["attention_mask"]
        )
        bias = encoder.encoder.compute_position_bias(hidden)
        return hidden, lambda layer, h: _first(layer(h, mask, bias))
    if encoder.config.model_type != "bert":
        return None
    hidden = encoder.embeddings(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"))
    mask = create_bidirectional_mask(
        config=encoder.config, inputs_embeds=hidden, attention_mask=enc["attention_mask"]
    )
    return hidden, lambda layer, h: _first(layer(h, attention_mask=mask))


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _bottom(encoder: nn.Module, enc: Any, k: int) -> tuple[torch.Tensor, Callable] | None:
    """Hidden states after the embeddings and the bottom k layers, and the runner for the layers above."""
    runner = _layer_runner(encoder, enc)
    if runner is None:
        return None
    hidden, run = runner
    for layer in encoder.encoder.layer[:k]:
        hidden = run(layer, hidden)
    return hidden, run


def _top(encoder: nn.Module, hidden: torch.Tensor, run: Callable, k: int) -> torch.Tensor:
    for layer in encoder.encoder.layer[k:]:
        hidden = run(layer, hidden)
    return hidden


def _freeze(encoder: nn.Module, freeze_bottom: int, freeze_embeddings: bool) -> None:
    if freeze_embeddings or freeze_bottom > 0:
        for p in encoder.embeddings.parameters():
            p.requires_grad_(False)
    for layer in list(encoder.encoder.layer)[:freeze_bottom]:
        for p in layer.parameters():
            p.requires_grad_(False)


def _train(
    model: nn.Module,
    encoder: nn.Module,
    batches: list[tuple[np.ndarray, Any]],
    loss_of: Any,
    freeze_bottom: int,
    epochs: int,
    learning_rate: float,
    head_params: list[nn.Parameter],
    head_learning_rate: float,
    seed: int,
    desc: str,
) -> list[float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    body = [p for p in encoder.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": head_learning_rate}]
    if body:
        groups.append({"params": body, "lr": learning_rate})
    optimizer = torch.optim.AdamW(groups)
    cache = None
    if freeze_bottom > 0:
        encoder.eval()
        with torch.no_grad():
            cache = [
                _bottom(encoder, enc, freeze_bottom)
                for _, enc in tqdm(batches, desc=f"{desc}: frozen layers", leave=False, disable=None)
            ]
    model.train()
    losses = []
    with tqdm(total=epochs * len(batches), desc=desc, unit="batch", leave=False, disable=None) as bar:
        for _ in range(epochs):
            total = 0.0
            for b in rng.permutation(len(batches)):
                idx, enc = batches[b]
                if cache is not None:
                    hidden = _top(encoder, cache[b][0], cache[b][1], freeze_bottom)
                else:
                    extra = {"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {}
                    hidden = encoder(
                        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **extra
                    ).last_hidden_state
                loss = loss_of(idx, hidden, enc["attention_mask"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                bar.update()
            losses.append(total / sum(len(i) for i, _ in batches))
    model.eval()
    return losses


def finetune_classifier(
    model_dir: Path,
    texts: Sequence[str],
    labels: np.ndarray,
    num_classes: int,
    *,
    soft_targets: np.ndarray | None = None,
    keep_layers: int | None = None,
    freeze_bottom: int = 0,
    train_top: int | None = None,
    freeze_embeddings: bool = True,
    init_head: np.ndarray | None = None,
    epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float = 5e-5,
    head_learning_rate: float = 1e-2,
    max_length: int = 32,
    seed: int = 0,
    desc: str = "fine-tune",
) -> FineTuneResult:
    """Fine-tunes encoder + cosine head on labelled texts (cross-entropy; KL to `soft_targets` if given).
    `train_top` (instead of `freeze_bottom`) trains only that many top layers, whatever the depth."""
    torch.manual_seed(seed)
    tokenizer, encoder = load_encoder(model_dir, keep_layers)
    if train_top is not None:
        freeze_bottom = max(0, len(encoder.encoder.layer) - train_top)
    model = EncoderClassifier(encoder, num_classes, init_head)
    _freeze(encoder, freeze_bottom, freeze_embeddings)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    soft = torch.from_numpy(soft_targets.astype(np.float32)) if soft_targets is not None else None

    def loss_of(idx: np.ndarray, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = model.classify(mean_pool(hidden, mask))
        loss = F.cross_entropy(logits, y[idx])
        if soft is not None:
            loss = loss + F.kl_div(F.log_softmax(logits, -1), F.softmax(soft[idx], -1), reduction="batchmean")
        return loss

    start = time.perf_counter()
    batches = _batches(tokenizer, texts, batch_size, max_length)
    losses = _train(
        model,
        encoder,
        batches,
        loss_of,
        freeze_bottom,
        epochs,
        learning_rate,
        [model.head],
        head_learning_rate,
        seed,
        desc,
    )
    seconds = time.perf_counter() - start
    return FineTuneResult(
        model,
        tokenizer,
        seconds,
        losses,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )


@torch.inference_mode()
def classifier_logits(
    model: EncoderClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 256,
    max_length: int = 32,
) -> np.ndarray:
    model.eval()
    out = np.zeros((len(texts), model.head.shape[0]), dtype=np.float32)
    for idx, enc in _batches(tokenizer, texts, batch_size, max_length):
        out[idx] = model(**enc).numpy()
    return out


@torch.inference_mode()
def layer_embeddings(model_dir: Path, texts: Sequence[str], max_length: int = 32) -> list[np.ndarray]:
    """Mean-pooled, L2-normalized hidden states of every layer (0 = embeddings output) of the pretrained
    encoder, in one pass: the input of the kernel analysis."""
    tokenizer, encoder = load_encoder(model_dir)
    encoder.eval()
    out: list[np.ndarray] | None = None
    for idx, enc in _batches(tokenizer, texts, 256, max_length):
        states = encoder(**enc, output_hidden_states=True).hidden_states
        if out is None:
            out = [np.zeros((len(texts), s.shape[-1]), dtype=np.float32) for s in states]
        for i, s in enumerate(states):
            out[i][idx] = mean_pool(s, enc["attention_mask"]).numpy()
    return out or []


class CrossEncoder(nn.Module):
    """The relevance teacher: the encoder reads "query [SEP] title" together; a linear head gives the
    data's grades (worst to best: three, or ESCI's four) from the mean-pooled pair."""

    def __init__(self, encoder: nn.Module, num_grades: int = 3) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), num_grades)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def forward(self, **enc: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(**enc).last_hidden_state
        return self.classify(mean_pool(hidden, enc["attention_mask"]))


def _pair_batches(
    tokenizer: Any, queries: Sequence[str], titles: Sequence[str], batch_size: int, max_length: int
) -> list[tuple[np.ndarray, Any]]:
    lengths = [len(q) + len(t) for q, t in zip(queries, titles, strict=True)]
    out = []
    for idx in length_batches(lengths, batch_size):
        enc = tokenizer(
            [queries[i] for i in idx],
            [titles[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        out.append((idx, enc))
    return out


def finetune_cross_encoder(
    model_dir: Path,
    queries: Sequence[str],
    titles: Sequence[str],
    grades: np.ndarray,
    *,
    keep_layers: int | None = None,
    freeze_bottom: int = 0,
    train_top: int | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    head_learning_rate: float = 5e-3,
    max_length: int = 48,
    seed: int = 0,
    num_grades: int = 3,
) -> FineTuneResult:
    torch.manual_seed(seed)
    tokenizer, encoder = load_encoder(model_dir, keep_layers)
    if train_top is not None:
        freeze_bottom = max(0, len(encoder.encoder.layer) - train_top)
    model = CrossEncoder(encoder, num_grades)
    _freeze(encoder, freeze_bottom, True)
    y = torch.from_numpy(np.asarray(grades, dtype=np.int64))

    def loss_of(idx: np.ndarray, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model.classify(mean_pool(hidden, mask)), y[idx])

    start = time.perf_counter()
    batches = _pair_batches(tokenizer, queries, titles, batch_size, max_length)
    losses = _train(
        model,
        encoder,
        batches,
        loss_of,
        freeze_bottom,
        epochs,
        learning_rate,
        list(model.head.parameters()),
        1e-3,
        seed,
        "cross-encoder",
    )
    return FineTuneResult(
        model,
        tokenizer,
        time.perf_counter() - start,
        losses,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )


@torch.inference_mode()
def cross_encoder_probabilities(
    model: CrossEncoder,
    tokenizer: Any,
    queries: Sequence[str],
    titles: Sequence[str],
    batch_size: int = 256,
    max_length: int = 48,
) -> np.ndarray:
    model.eval()
    out = np.zeros((len(queries), model.head.out_features), dtype=np.float32)
    for idx, enc in _pair_batches(tokenizer, queries, titles, batch_size, max_length):
        out[idx] = torch.softmax(model(**enc), -1).numpy()
    return out
