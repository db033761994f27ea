"""The hashed query encoder's training (training/retrieval.py train_query_encoder): no teacher is loaded, the
teacher's vectors are made up."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from server.featurize import Featurizer, FeaturizerConfig
from training.data.queries import SyntheticQuery
from training.presets import PRESETS
from training.retrieval import encode_queries, train_query_encoder
from training.teachers import minilm_dir

PRESET = replace(
    PRESETS["tiny"], num_buckets=1 << 12, encoder_dim=16, epochs=100, batch_size=16, learning_rate=2e-2
)


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_general_texts_are_put_where_the_teacher_puts_them() -> None:
    rng = np.random.default_rng(0)
    f = Featurizer(minilm_dir() / "tokenizer.json", FeaturizerConfig(num_buckets=PRESET.num_buckets))
    titles = ["oak coffee table", "wool area rug", "brass floor lamp", "velvet accent chair"]
    products = _unit(rng, len(titles), 8)[:, None, :]
    queries = [SyntheticQuery(t.split()[0], i, i) for i, t in enumerate(titles)]
    targets = products[:, 0].copy()
    # Words no catalogue title holds, each with a teacher vector of its own.
    general = (["lacoste tennis", "usb charger", "garden hose", "espresso machine"], _unit(rng, 4, 8))

    def cosine(texts: list[str], vecs: np.ndarray, **kw: object) -> float:
        torch.manual_seed(0)
        encoder, history = train_query_encoder(queries, targets, products, titles, f, PRESET, 0, **kw)
        assert np.isfinite(history).all()
        return float((encode_queries(encoder, f, texts) * vecs).sum(1).mean())

    without, with_general = cosine(*general), cosine(*general, general=general)
    assert with_general > 0.8 > without
    # The catalogue's own queries are still learned alongside.
    assert cosine([q.text for q in queries], targets, general=general) > 0.8
