"""The tiered relevance head: a recall and a refine head combine into three grade probabilities."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from training.presets import PRESETS
from training.relevance import FlatRelevanceHead, TieredRelevanceHead, catalogue_grade, train_relevance_head


def test_tiered_probabilities() -> None:
    head = TieredRelevanceHead(4)
    probs = head(torch.randn(50, 4))
    assert probs.shape == (50, 3) and torch.allclose(probs.sum(-1), torch.ones(50), atol=1e-6)
    assert torch.allclose(head.log_probs(torch.zeros(1, 4)).exp(), head(torch.zeros(1, 4)))


def test_heads_learn_grades_from_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1200, 4)).astype(np.float32)
    grades = np.where(x[:, 1] < 0.3, 0, np.where(x[:, 0] > 0.6, 2, 1))
    for tiered in (True, False):
        preset = replace(PRESETS["tiny"], methods=replace(PRESETS["tiny"].methods, tiered_relevance=tiered))
        head = train_relevance_head(x, grades, None, preset, 0)
        assert isinstance(head, TieredRelevanceHead if tiered else FlatRelevanceHead)
        with torch.no_grad():
            pred = head(torch.from_numpy(x)).argmax(1).numpy()
        assert np.mean(pred == grades) > 0.9


def test_catalogue_grade() -> None:
    assert catalogue_grade(["oak", "tab"], 1, ["oak", "table"], 1) == 2  # typed prefix, same category
    assert catalogue_grade(["oak", "table"], 1, ["oak", "table"], 2) == 1
    assert catalogue_grade(["velvet"], 1, ["oak", "table"], 1) == 1
    assert catalogue_grade(["velvet"], 1, ["oak", "table"], 2) == 0
