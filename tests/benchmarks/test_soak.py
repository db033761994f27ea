"""The soak mode end to end, opt-in (SIFT_SOAK=1): one minute of mixed open-loop load on the tiny bundle
must pass its own leak and drift checks. The ten-minute record is in benchmarks/results/soak."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.__main__ import main

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(os.environ.get("SIFT_SOAK") != "1", reason="a minute of load; set SIFT_SOAK=1"),
]


def test_one_minute_soak_passes(tiny_bundle: Path, tmp_path: Path) -> None:
    main(
        [
            "soak",
            "--bundle", str(tiny_bundle),
            "--rate", "200",
            "--duration", "60",
            "--window", "5",
            "--processes", "1",
            "--output", str(tmp_path),
        ]
    )  # fmt: skip
    result = json.loads((tmp_path / "results.json").read_text())["soak"]
    assert result["passed"] and result["errors"] == 0 and len(result["windows"]) == 12
    assert all(w["open_fds"] > 0 and w["threads"] > 0 for w in result["windows"])
