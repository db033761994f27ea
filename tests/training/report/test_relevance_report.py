"""The report's relevance figures: the AUC it computes and the tables it writes (no data needed)."""

from __future__ import annotations

import numpy as np

from training.report.catalogue import roc_auc
from training.report.markdown import _relevance_agreement


def test_roc_auc() -> None:
    positive = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5  # ties count half
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), positive) == 0.75
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_agreement_tables() -> None:
    block = {
        "queries": 3,
        "pairs": 60,
        "teacher_grade_shares": [0.9, 0.08, 0.02],
        "students": {
            "shipped": {
                "kind": "text_mlp",
                "spearman_pooled": 0.81,
                "spearman_pooled_ci": [0.78, 0.84],
                "spearman_mean_per_query": 0.7,
                "grade_agreement": 0.95,
            }
        },
    }
    text = "\n".join(_relevance_agreement({"fixed": block}))
    assert "| shipped | text_mlp | 0.810 | 0.780-0.840 | 0.700 | 0.950 |" in text
    assert "3 real queries against a fixed set of 20 catalogue products" in text
    # Results written before the text student keep rendering as they did.
    old = {
        "queries": 3,
        "candidates_per_query": 20,
        "spearman_pooled": 0.256,
        "spearman_mean_per_query": 0.19,
        "grade_agreement": 0.96,
    }
    assert "Spearman of student and cross-encoder scores 0.256 pooled" in "\n".join(_relevance_agreement(old))
