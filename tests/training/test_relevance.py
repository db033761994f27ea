"""The tiered relevance head: a recall and a refine head combine into three grade probabilities, and n - 1
gates into n (ESCI's four)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from training.presets import PRESETS
from training.relevance import FlatRelevanceHead, TieredRelevanceHead, catalogue_grade, train_relevance_head
from training.relevance_text import tiered_probabilities


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


def test_tiered_probabilities_over_any_number_of_grades() -> None:
    """n - 1 gates give n probabilities summing to 1; two gates are the recall/refine formula exactly."""
    probs = tiered_probabilities(torch.rand(20, 3))
    assert probs.shape == (20, 4) and torch.allclose(probs.sum(-1), torch.ones(20), atol=1e-6)
    r, e = torch.rand(20), torch.rand(20)
    assert torch.equal(
        tiered_probabilities(torch.stack([r, e], -1)), torch.stack([1 - r, r * (1 - e), r * e], -1)
    )


def test_heads_learn_four_grades() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1600, 4)).astype(np.float32)
    grades = np.digitize(x[:, 0], [0.25, 0.5, 0.75])  # 0..3 by the first feature
    for tiered in (True, False):
        preset = replace(PRESETS["tiny"], methods=replace(PRESETS["tiny"].methods, tiered_relevance=tiered))
        head = train_relevance_head(x, grades, None, preset, 0, num_grades=4)
        with torch.no_grad():
            probs = head(torch.from_numpy(x)).numpy()
        assert probs.shape == (1600, 4)
        assert np.mean(probs.argmax(1) == grades) > 0.9
