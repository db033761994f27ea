"""Per-call latency at batch 1 on one thread: what one request costs a server worker, for the training report.

The server gives each model call one intra-op thread (server/runtime/onnx.py), so teacher and students are
compared the same way, tokenisation included.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from server.runtime.onnx import OnnxModel, ThreadSettings


def time_per_call(
    fn: Callable[[], object], *, warmup: int = 20, repeats: int = 200, min_seconds: float = 1.0
) -> dict[str, float]:
    """Calls `fn` `warmup` times untimed, then at least `repeats` times and for at least `min_seconds`,
    timing each call. The median resists the odd preemption on shared cores; p90 shows the tail."""
    for _ in range(warmup):
        fn()
    samples: list[int] = []
    deadline = time.perf_counter_ns() + int(min_seconds * 1e9)
    while len(samples) < max(repeats, 1) or time.perf_counter_ns() < deadline:
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    ms = np.array(samples, dtype=np.float64) / 1e6
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "calls": float(len(ms)),
    }


def torch_encoder_latency(
    model_dir: Path, texts: Sequence[str], *, warmup: int = 20, repeats: int = 200, min_seconds: float = 1.0
) -> dict:
    """The teacher in PyTorch fp32 (transformers, as training.teachers.SentenceTeacher loads it) on one
    thread: tokenise one text, forward, mean-pool, normalise. The thread count is restored afterwards."""
    from training.teachers import SentenceTeacher

    teacher = SentenceTeacher(model_dir)
    cycle = itertools.cycle(texts)

    @torch.inference_mode()
    def call() -> torch.Tensor:
        batch = teacher.tokenizer(
            [next(cycle)], truncation=True, max_length=teacher.max_length, return_tensors="pt"
        )
        hidden = teacher.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return time_per_call(call, warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    finally:
        torch.set_num_threads(threads)


def onnx_latency(
    path: Path,
    feeds_for: Callable[[str], dict[str, np.ndarray]],
    texts: Sequence[str],
    *,
    warmup: int = 20,
    repeats: int = 200,
    min_seconds: float = 1.0,
) -> dict:
    """An ONNX model through the server's own OnnxModel with intra_op=1, inter_op=1, one text per call;
    `feeds_for` turns a text into the model's inputs, so its tokenisation is timed too."""
    model = OnnxModel(path, f"latency:{path.stem}", ThreadSettings(intra_op=1, inter_op=1))
    cycle = itertools.cycle(texts)
    return time_per_call(
        lambda: model.run(feeds_for(next(cycle))), warmup=warmup, repeats=repeats, min_seconds=min_seconds
    )
