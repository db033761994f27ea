"""The retention gate: a student that keeps too little of its teacher stops the run unless forced."""

from __future__ import annotations

import pytest

from training.gate import RetentionError, check_retention
from training.presets import PRESETS


def _evaluation(relevance_retention: float) -> dict:
    return {
        "intent": {"retention": 0.99, "dev_teacher_accuracy": 0.8, "dev_student_int8_accuracy": 0.78},
        "retrieval": {"retention": 0.98},
        "relevance": {"retention": relevance_retention},
    }


def test_dev_split_measures_intent_and_every_capability_is_checked() -> None:
    preset = PRESETS["tiny"]
    gate = check_retention(_evaluation(1.0), preset, force=False)
    assert gate["measured"] == {"intent": 0.975, "retrieval": 0.98, "relevance": 1.0}
    assert gate["forced"] is False and gate["min_retention"] == preset.min_retention


def test_a_failing_student_stops_the_run_unless_forced() -> None:
    preset = PRESETS["tiny"]
    low = preset.min_retention - 0.1
    with pytest.raises(RetentionError, match="relevance"):
        check_retention(_evaluation(low), preset, force=False)
    assert check_retention(_evaluation(low), preset, force=True)["forced"] is True
