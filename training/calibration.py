"""Confidence calibration: temperature scaling (Guo et al., 2017) fitted on the dev split.

A search stack filters by the top category only when it can trust its probability, so ClassifyIntent's
`min_score` should mean what it says: of the answers given with probability p, about p are right. One
temperature divides the student's logits; it keeps every ranking (so accuracy is unchanged) and is chosen
to minimise the negative log-likelihood of the dev labels. Its effect is reported as the expected
calibration error (ECE) on the evaluation split, before and after.
"""

from __future__ import annotations

import numpy as np

TEMPERATURES = np.geomspace(0.25, 8.0, 61)
"""The grid searched: the NLL is one-dimensional and smooth in T, so a fine grid is exact enough."""
ECE_BINS = 15


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising dev NLL; 1.0 when there are no labelled rows (labels < 0 are unknown)."""
    known = labels >= 0
    if known.sum() == 0:
        return 1.0
    x, y = np.asarray(logits, dtype=np.float64)[known], labels[known]
    nll = [-_log_softmax(x / t)[np.arange(len(y)), y].mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-1 answer: the mean |accuracy - confidence| over equal-width confidence bins,
    weighted by their share of rows. Rows of unknown label (< 0) are left out."""
    known = labels >= 0
    if known.sum() == 0:
        return float("nan")
    probs, labels = probs[known], labels[known]
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)
