"""The stage cache: the pipeline's stages run in order, each timed, and each result saved under
`<output>.stages/` so that a run can resume from the last finished stage (`--resume`) or rerun from one
stage on (`--rerun STAGE`). The cache holds arrays and student weights only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

log = logging.getLogger("sift.train")
T = TypeVar("T")

STAGES = ("data", "intent_teacher", "intent_student", "retrieval", "relevance")


@dataclass
class RunReport:
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)


class StageCache:
    """Runs named stages in order, timing each; with `resume`, a stage finished by an earlier run is loaded
    instead of rerun, except `rerun` and every stage after it."""

    def __init__(self, directory: Path, report: RunReport, resume: bool, rerun: str | None) -> None:
        if rerun is not None and rerun not in STAGES:
            raise ValueError(f"--rerun {rerun}: not one of {STAGES}")
        self.directory = directory
        self.report = report
        self.resume = resume or rerun is not None
        self.fresh_from = STAGES.index(rerun) if rerun else len(STAGES)
        directory.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[], T]) -> T:
        path = self.directory / f"{name}.pt"
        if self.resume and path.is_file() and STAGES.index(name) < self.fresh_from:
            log.info("stage %s: resumed from %s", name, path)
            return torch.load(path, weights_only=False)  # our own cache, written by this code
        log.info("stage %s ...", name)
        start = time.perf_counter()
        result = fn()
        self.report.timings[name] = round(time.perf_counter() - start, 2)
        torch.save(result, path)
        log.info("stage %s done in %.1f s", name, self.report.timings[name])
        return result
