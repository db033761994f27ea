"""The gates a bundle passes before it ships: int8 parity with fp32 per student, and the retention of each
student against its teacher."""

from __future__ import annotations

from typing import Any

from training.presets import Preset

# int8 must agree with fp32 at least this well, or the next quantization method is tried (then fp32).
PARITY = {"intent": 0.995, "query_encoder": 0.98, "relevance": 0.99}


class RetentionError(RuntimeError):
    """A student keeps less of its teacher's quality than the preset's min_retention."""


def check_retention(ev: dict[str, Any], preset: Preset, force: bool) -> dict[str, Any]:
    """Refuses students that keep less than min_retention of their teacher (unless forced)."""
    checks = {"intent": ev["intent"].get("retention")}
    if "dev_teacher_accuracy" in ev["intent"] and ev["intent"]["dev_teacher_accuracy"] > 0:
        checks["intent"] = round(
            ev["intent"]["dev_student_int8_accuracy"] / ev["intent"]["dev_teacher_accuracy"], 4
        )
    if "retrieval" in ev:
        checks["retrieval"] = ev["retrieval"]["retention"]
    if "relevance" in ev and "retention" in ev["relevance"]:
        checks["relevance"] = ev["relevance"]["retention"]
    failed = {k: v for k, v in checks.items() if v is not None and v < preset.min_retention}
    if failed and not force:
        raise RetentionError(
            f"students below min_retention {preset.min_retention}: {failed} (pass --force to ship anyway)"
        )
    return {"min_retention": preset.min_retention, "measured": checks, "forced": bool(failed and force)}
