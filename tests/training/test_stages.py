"""Stage cache: a resumed run reuses finished stages; --rerun recomputes a stage and everything after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.stages import STAGES, RunReport, StageCache


def run_all(cache: StageCache, calls: list[str]) -> list[str]:
    out = []
    for name in STAGES:
        out.append(cache.run(name, lambda name=name: calls.append(name) or f"{name}-result"))
    return out


def test_resume_and_rerun(tmp_path: Path) -> None:
    calls: list[str] = []
    first = run_all(StageCache(tmp_path, RunReport(), resume=False, rerun=None), calls)
    assert calls == list(STAGES) and first == [f"{s}-result" for s in STAGES]

    calls.clear()
    report = RunReport()
    assert run_all(StageCache(tmp_path, report, resume=True, rerun=None), calls) == first
    assert calls == [] and report.timings == {}

    calls.clear()
    run_all(StageCache(tmp_path, RunReport(), resume=False, rerun="retrieval"), calls)
    assert calls == ["retrieval", "relevance"]

    with pytest.raises(ValueError, match="--rerun nope"):
        StageCache(tmp_path, RunReport(), resume=True, rerun="nope")
