"""The gates a bundle passes before it ships: int8 parity with fp32 per student, and the retention of each
student against its teacher.

Retention is the student's quality over its teacher's, on the same items. On the small evaluation sets of
real data (96 WANDS dev queries: one query is a point of accuracy) a point estimate flips from pass to fail
with the seed, so the gate decides on a paired bootstrap interval instead: a student is refused only when
the whole 95% interval of its retention lies below `min_retention`, that is when the data show, at 95%
confidence, that it keeps less than that share of its teacher. The point, the interval and the rule are
written into the manifest's evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.metrics import bootstrap_ci

# int8 must agree with fp32 at least this well, or the next quantization method is tried (then fp32).
PARITY = {"intent": 0.995, "query_encoder": 0.98, "relevance": 0.99}
CONFIDENCE = 0.95
RESAMPLES = 2000
RULE = (
    "refused when the upper bound of the paired bootstrap 95% interval of retention "
    "(student mean / teacher mean over the same items) is below min_retention"
)


class RetentionError(RuntimeError):
    """A student keeps less of its teacher's quality than the preset's min_retention."""


@dataclass(frozen=True)
class Paired:
    """Per-item quality of a student and of its teacher on the same items: 1/0 top-1 correctness (intent),
    hit@10 of the held-out product (retrieval), nDCG@10 of a query's candidates (relevance)."""

    measure: str
    student: np.ndarray
    teacher: np.ndarray

    def __post_init__(self) -> None:
        if len(self.student) != len(self.teacher):
            raise ValueError(
                f"{self.measure}: {len(self.student)} student items, {len(self.teacher)} teacher"
            )


def _ratio(student: np.ndarray, teacher: np.ndarray) -> float:
    base = float(np.mean(teacher))
    return float(np.mean(student)) / base if base > 0 else float("nan")


def retention_interval(p: Paired, seed: int = 0) -> dict[str, Any]:
    """Point retention and its paired bootstrap interval (items resampled jointly)."""
    lo, hi = bootstrap_ci(_ratio, p.student, p.teacher, n=RESAMPLES, seed=seed, alpha=1 - CONFIDENCE)
    return {
        "measure": p.measure,
        "items": len(p.student),
        "student": round(float(np.mean(p.student)), 4) if len(p.student) else None,
        "teacher": round(float(np.mean(p.teacher)), 4) if len(p.teacher) else None,
        "retention": round(_ratio(p.student, p.teacher), 4) if len(p.student) else None,
        "ci95": [round(lo, 4), round(hi, 4)],
    }


def check_retention(
    samples: dict[str, Paired], min_retention: float, force: bool, seed: int = 0
) -> dict[str, Any]:
    """Measures every student's retention with its interval; raises RetentionError (unless forced) when a
    student is below min_retention with 95% confidence."""
    measured = {name: retention_interval(p, seed) for name, p in samples.items() if len(p.student)}
    failed = {
        name: m["ci95"]
        for name, m in measured.items()
        if not np.isnan(m["ci95"][1]) and m["ci95"][1] < min_retention
    }
    if failed and not force:
        raise RetentionError(
            f"students below min_retention {min_retention} at {CONFIDENCE:.0%} confidence "
            f"(95% interval of retention): {failed} (pass --force to ship anyway)"
        )
    return {
        "min_retention": min_retention,
        "rule": RULE,
        "measured": measured,
        "forced": bool(failed and force),
    }
