"""Temperature scaling: fitted on dev, it makes confidence match accuracy and never changes the ranking."""

from __future__ import annotations

import numpy as np

from training.calibration import expected_calibration_error, fit_temperature, softmax


def _overconfident(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose argmax is right 60% of the time but with near-certain confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    top = np.where(rng.random(n) < 0.6, labels, (labels + 1) % classes)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), top] += 12.0
    return logits, labels


def test_fitted_temperature_lowers_calibration_error_on_unseen_rows() -> None:
    dev_logits, dev_labels = _overconfident(2000, 10, seed=0)
    test_logits, test_labels = _overconfident(2000, 10, seed=1)
    t = fit_temperature(dev_logits, dev_labels)
    assert t > 1.0  # overconfident logits are softened
    before = expected_calibration_error(softmax(test_logits), test_labels)
    after = expected_calibration_error(softmax(test_logits, t), test_labels)
    assert before > 0.3 and after < before / 3
    assert (softmax(test_logits, t).argmax(1) == test_logits.argmax(1)).all()


def test_no_labelled_dev_rows_keeps_temperature_one() -> None:
    logits, _ = _overconfident(50, 4, seed=2)
    assert fit_temperature(logits, np.full(50, -1)) == 1.0


def test_ece_of_a_perfectly_calibrated_predictor_is_small() -> None:
    rng = np.random.default_rng(3)
    n = 20000
    confidence = rng.uniform(0.5, 1.0, n)
    labels = np.where(rng.random(n) < confidence, 0, 1)
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert expected_calibration_error(probs, labels) < 0.02
