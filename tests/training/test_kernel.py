"""Kernel analysis: exact cases, informative against shuffled labels, and whether the kernel score ranks
embeddings the way a separately trained classifier does."""

from __future__ import annotations

import numpy as np
import pytest

from training.kernel import kernel_scores, kernel_target_alignment, krr_accuracy
from training.metrics import spearman

CLASSES, DIMS, ROWS = 5, 16, 300


def _blobs(means: np.ndarray, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class means plus isotropic Gaussian noise: larger scale, less informative embedding."""
    y = rng.integers(0, len(means), ROWS)
    return means[y] + rng.normal(size=(ROWS, means.shape[1])) * scale, y


def _nearest_centroid_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> float:
    classes = np.unique(y_train)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in classes])
    pred = classes[((x_test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return float(np.mean(pred == y_test))


def test_alignment_is_one_when_embedding_is_the_label() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2, 1])
    x = np.eye(3)[labels] * np.arange(1, 8)[:, None]  # row scale must not matter: rows are normalised
    assert kernel_target_alignment(x, labels, "linear") == pytest.approx(1.0)
    assert kernel_target_alignment(x, labels, "rbf") == pytest.approx(1.0)


def test_alignment_undefined_for_one_class_and_unknown_kernel_rejected() -> None:
    x = np.random.default_rng(0).normal(size=(10, 4))
    assert np.isnan(kernel_target_alignment(x, np.zeros(10, dtype=int)))
    with pytest.raises(ValueError):
        kernel_target_alignment(x, np.arange(10) % 2, kernel="poly")


def test_informative_embedding_beats_shuffled_labels() -> None:
    rng = np.random.default_rng(0)
    x, y = _blobs(rng.normal(size=(CLASSES, DIMS)), 0.7, rng)
    shuffled = rng.permutation(y)
    for kernel in ("linear", "rbf"):
        real, fake = kernel_target_alignment(x, y, kernel), kernel_target_alignment(x, shuffled, kernel)
        assert real > 0.5
        assert abs(fake) < 0.1
    assert krr_accuracy(x, y) > 0.9
    # Shuffled labels leave chance (1/5) only.
    assert krr_accuracy(x, shuffled) < 0.35


def test_krr_split_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x, y = _blobs(rng.normal(size=(CLASSES, DIMS)), 2.0, rng)
    assert krr_accuracy(x, y, seed=3) == krr_accuracy(x, y, seed=3)
    assert 0.3 < krr_accuracy(x, y, kernel="linear") < 0.95


def test_kernel_scores_subsample() -> None:
    rng = np.random.default_rng(2)
    x, y = _blobs(rng.normal(size=(CLASSES, DIMS)), 1.0, rng)
    scores = kernel_scores(x, y, sample=120, seed=0)
    assert set(scores) == {"kta_linear", "kta_rbf", "krr_accuracy"}
    assert all(0.0 < v <= 1.0 for v in scores.values())
    # Subsampling draws a different row set from the full computation.
    assert scores["kta_linear"] != pytest.approx(kernel_target_alignment(x, y, "linear"), abs=1e-9)


@pytest.mark.parametrize("key", ["kta_linear", "kta_rbf", "krr_accuracy"])
def test_kernel_score_ranks_embeddings_like_a_trained_classifier(key: str) -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(CLASSES, DIMS))
    kernel, held_out = [], []
    for scale in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0):
        x, y = _blobs(means, scale, rng)
        kernel.append(kernel_scores(x, y, seed=0)[key])
        # The classifier never sees the rows the kernel score was computed on.
        x_train, y_train = _blobs(means, scale, rng)
        x_test, y_test = _blobs(means, scale, rng)
        held_out.append(_nearest_centroid_accuracy(x_train, y_train, x_test, y_test))
    assert max(held_out) - min(held_out) > 0.4  # the family really spans easy to hard
    assert spearman(np.array(kernel), np.array(held_out)) > 0.8
