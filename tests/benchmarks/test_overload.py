"""sift-bench overload's done-when checks (benchmarks/overload.py `checks`), from hand-made cases: a ladder
whose goodput falls at 10x is a collapse even when it stays above the goodput at 1x, and CANCELLED
anywhere on the ladder is counted. And the client processes' scheduling (`--client-priority`)."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from benchmarks.overload import checks, set_client_priority


def _row(multiple: float, retry: str, goodput: float, cancelled: float = 0.0) -> dict[str, Any]:
    return {
        "label": f"{multiple:g}x, {retry}",
        "multiple": multiple,
        "retry": retry,
        "goodput_per_s": goodput,
        "goodput_ratio": 0.0,
        "cancelled_share": cancelled,
    }


def _ladder(*goodputs: float, cancelled: float = 0.0) -> list[dict[str, Any]]:
    rows = [_row(m, "immediate", g, cancelled) for m, g in zip((1, 2, 5, 10), goodputs, strict=True)]
    for row in rows:
        row["goodput_ratio"] = row["goodput_per_s"] / rows[0]["goodput_per_s"]
    return rows


def _by_what(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["what"].split(" (")[0]: c for c in found}


def test_a_fall_at_10x_is_a_collapse_even_above_the_goodput_at_1x() -> None:
    found = _by_what(checks(None, _ladder(156, 298, 758, 200), None))
    assert found["ladder: lowest goodput over the same clients' goodput at 1x, 1x-10x"]["met"]
    collapse = found["ladder: lowest goodput over the best at a lower multiple"]
    assert not collapse["met"] and collapse["figure"] == "0.26x (10x, immediate)"


def test_a_ladder_that_keeps_its_goodput_meets_both() -> None:
    found = _by_what(checks(None, _ladder(156, 298, 758, 700), None))
    assert found["ladder: lowest goodput over the best at a lower multiple"]["met"]
    assert found["ladder: highest share of refused attempts that are CANCELLED"]["met"]


def test_cancelled_on_the_ladder_is_a_miss() -> None:
    found = _by_what(checks(None, _ladder(156, 298, 758, 700, cancelled=0.02), None))
    assert not found["ladder: highest share of refused attempts that are CANCELLED"]["met"]


def test_flood_and_hol_checks() -> None:
    flood = {
        "admitted_ms": {"ScoreRelevance": {"p50": 80.0, "p99": 240.0}},
        "refusals": 1000,
        "refusals_by_code": {"RESOURCE_EXHAUSTED": 995, "CANCELLED": 5},
        "cancelled_share": 0.005,
    }
    found = _by_what(checks(flood, [], {"p99_ratio": 2.5, "p99_ratio_range": [1.8, 3.1], "pairs": [{}] * 3}))
    assert found["flood: admitted ScoreRelevance p99"]["met"]
    assert found["flood: refusals that are RESOURCE_EXHAUSTED / CANCELLED"]["met"]
    hol = found["hol: ClassifyIntent p99 beside heavy relevance / alone, median of rounds"]
    assert not hol["met"] and hol["figure"] == "2.50x (1.80-3.10x over 3)"
    no_answer = dict(flood, admitted_ms={})
    assert not _by_what(checks(no_answer, [], None))["flood: admitted ScoreRelevance p99"]["met"]


def _policies_after(priorities: list[str]) -> list[int]:
    policies = []
    for priority in priorities:
        set_client_priority(priority)  # type: ignore[arg-type]
        policies.append(os.sched_getscheduler(0))
    return policies


def test_client_priority_idle_then_normal_sets_and_restores_the_processs_policy() -> None:
    # In a child: the pool's client processes serve case after case, so "normal" must undo "idle".
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        found = pool.apply(_policies_after, (["idle", "normal"],))
    assert found == [os.SCHED_IDLE, os.SCHED_OTHER]
