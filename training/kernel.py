"""Kernel analysis of embeddings: cheap predictors of how well a frozen embedding serves a classification
task, used to choose teacher layers without fine-tuning a model per layer. Two views of the same question:
centered kernel-target alignment (does the similarity structure match the label structure?) and the
held-out accuracy of kernel ridge regression (can a smooth function of the embedding read the label off?)."""

from __future__ import annotations

import numpy as np

_KERNELS = ("linear", "rbf")


def _normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalised rows, so the kernels see direction only (sentence embeddings differ in norm by layer)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [rows, dims] embedding, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)  # rounding can make a zero distance slightly negative


def _median_gamma(x: np.ndarray) -> float:
    """1 / median squared distance between distinct rows: the usual scale-free bandwidth."""
    d = _squared_distances(x, x)[np.triu_indices(len(x), k=1)]
    med = float(np.median(d)) if len(d) else 0.0
    return 1.0 / med if med > 0 else 1.0


def _kernel(a: np.ndarray, b: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    if kernel == "linear":
        return a @ b.T
    if kernel == "rbf":
        return np.exp(-gamma * _squared_distances(a, b))
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {_KERNELS}")


def _center(k: np.ndarray) -> np.ndarray:
    """H K H with H = I - 11ᵀ/n, without building H."""
    return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()


def _one_hot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, idx = np.unique(np.asarray(labels), return_inverse=True)
    y = np.zeros((len(idx), len(classes)), dtype=np.float64)
    y[np.arange(len(idx)), idx] = 1.0
    return y, classes


def kernel_target_alignment(
    x: np.ndarray, labels: np.ndarray, kernel: str = "linear", gamma: float | None = None
) -> float:
    """Centered alignment <Kc, Lc>_F / (||Kc|| ||Lc||) between the embedding kernel K and the label kernel
    L = Y Yᵀ (one-hot Y). In [-1, 1]; centering removes the constant offset that otherwise makes every
    kernel look aligned. nan when either centered kernel is zero (one class, or all rows identical)."""
    x = _normalise(x)
    labels = np.asarray(labels)
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} rows but {len(labels)} labels")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {_KERNELS}")
    if gamma is None and kernel == "rbf":
        gamma = _median_gamma(x)
    kc = _center(_kernel(x, x, kernel, gamma or 1.0))
    y, _ = _one_hot(labels)
    lc = _center(y @ y.T)
    denom = np.linalg.norm(kc) * np.linalg.norm(lc)
    if denom <= 1e-12:
        return float("nan")
    return float(np.sum(kc * lc) / denom)


def krr_accuracy(
    x: np.ndarray,
    labels: np.ndarray,
    ridge: float = 1e-2,
    kernel: str = "rbf",
    train_fraction: float = 0.7,
    seed: int = 0,
) -> float:
    """Held-out accuracy of kernel ridge regression on one-hot targets: alpha = (K + ridge I)^-1 Y on a random
    train part, argmax of K_test,train alpha on the rest. The RBF bandwidth is taken from the train part."""
    x = _normalise(x)
    labels = np.asarray(labels)
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} rows but {len(labels)} labels")
    if len(x) < 2:
        raise ValueError("krr_accuracy needs at least two rows (one to fit, one to test)")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {_KERNELS}")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = min(max(round(train_fraction * len(x)), 1), len(x) - 1)
    tr, te = perm[:n_train], perm[n_train:]
    gamma = _median_gamma(x[tr]) if kernel == "rbf" else 1.0
    y, classes = _one_hot(labels[tr])
    k_train = _kernel(x[tr], x[tr], kernel, gamma)
    # K + ridge I is symmetric positive definite for ridge > 0; solve is cheap at a few thousand rows.
    alpha = np.linalg.solve(k_train + ridge * np.eye(n_train), y)
    pred = classes[(_kernel(x[te], x[tr], kernel, gamma) @ alpha).argmax(1)]
    # A test label never seen in training cannot be predicted and so counts as an error, as it should.
    return float(np.mean(pred == labels[te]))


def kernel_scores(x: np.ndarray, labels: np.ndarray, sample: int = 2000, seed: int = 0) -> dict[str, float]:
    """Both KTA variants and KRR accuracy on at most `sample` random rows (the kernels are O(n^2) memory)."""
    x, labels = np.asarray(x), np.asarray(labels)
    if len(labels) != len(x):
        raise ValueError(f"{len(x)} rows but {len(labels)} labels")
    rng = np.random.default_rng(seed)
    if len(x) > sample:
        pick = np.sort(rng.choice(len(x), sample, replace=False))
        x, labels = x[pick], labels[pick]
    return {
        "kta_linear": kernel_target_alignment(x, labels, "linear"),
        "kta_rbf": kernel_target_alignment(x, labels, "rbf"),
        "krr_accuracy": krr_accuracy(x, labels, seed=seed),
    }
