"""Batch-1, one-thread latency measurements return sane numbers and leave the thread settings alone."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.latency import onnx_latency, time_per_call, torch_encoder_latency
from training.teachers import minilm_dir
from training.transformer_student import (
    build_transformer_student,
    encode_texts,
    export_transformer_onnx,
)

QUERIES = ["red running shoes", "green tea", "usb c charger 65w", "kids winter jacket"]


def _sane(result: dict[str, float], min_calls: int) -> None:
    assert set(result) == {"median_ms", "p90_ms", "mean_ms", "calls"}
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    assert result["median_ms"] <= result["p90_ms"]
    assert result["calls"] >= min_calls


def test_time_per_call_measures_each_call() -> None:
    calls = 0

    def sleepy() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.002)

    result = time_per_call(sleepy, warmup=3, repeats=10, min_seconds=0.0)
    _sane(result, 10)
    assert calls == 3 + result["calls"]
    assert 2.0 <= result["median_ms"] < 50.0


def test_time_per_call_runs_for_at_least_min_seconds() -> None:
    start = time.perf_counter()
    result = time_per_call(lambda: sum(range(100)), warmup=0, repeats=1, min_seconds=0.2)
    assert time.perf_counter() - start >= 0.2
    _sane(result, 100)


def test_torch_latency_restores_threads() -> None:
    before = torch.get_num_threads()
    result = torch_encoder_latency(minilm_dir(), QUERIES, warmup=2, repeats=10, min_seconds=0.0)
    _sane(result, 10)
    assert torch.get_num_threads() == before


def test_onnx_latency_of_a_student(tmp_path: Path) -> None:
    student, tokenizer = build_transformer_student(minilm_dir(), QUERIES, num_layers=2)
    path = tmp_path / "student.onnx"
    export_transformer_onnx(student, tokenizer, path)
    seen: list[str] = []

    def feeds(text: str) -> dict[str, np.ndarray]:
        seen.append(text)
        ids, mask = encode_texts(tokenizer, [text])
        return {"input_ids": ids, "attention_mask": mask}

    result = onnx_latency(path, feeds, QUERIES, warmup=2, repeats=20, min_seconds=0.0)
    _sane(result, 20)
    assert set(seen) == set(QUERIES)  # cycles through the texts, one per call
