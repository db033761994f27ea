"""The soak verdict on synthetic windows, and the soak mode end to end, opt-in (SIFT_SOAK=1): one minute of
mixed open-loop load on the tiny bundle must pass its own leak and drift checks. The ten-minute record is
in benchmarks/results/soak."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.soak import verdict

MIB = 1 << 20


def _windows(p99s: list[float], rss_mib: list[float]) -> list[dict]:
    return [
        {"warmup": i < 2, "latency_ms": {"p99": p99}, "rss_bytes": int(rss * MIB), "codes": {"OK": 100}}
        for i, (p99, rss) in enumerate(zip(p99s, rss_mib, strict=True))
    ]


def test_noisy_flat_p99_passes_and_a_trend_fails() -> None:
    # Window p99s swinging +-40% around 8 ms with no trend, the last three happening to be high: noise.
    noisy = [12.0, 11.0, 6.2, 5.6, 7.0, 9.8, 12.2, 10.6, 5.4, 6.4, 7.0, 6.9, 5.5, 6.8, 6.0, 8.9, 10.8]
    flat = verdict(_windows(noisy, [150.0] * len(noisy)), 0.05, 0.20)
    assert flat["passed"], flat["failures"]
    rising = [8.0 + 0.5 * i for i in range(len(noisy))]  # a server slowing down over the run
    slow = verdict(_windows(rising, [150.0] * len(rising)), 0.05, 0.20)
    assert not slow["passed"] and "p99 drifted" in slow["failures"][0]


def test_rss_growth_and_failed_calls_fail() -> None:
    leak = verdict(_windows([8.0] * 10, [150.0 + 2 * i for i in range(10)]), 0.05, 0.20)
    assert not leak["passed"] and "RSS grew" in leak["failures"][0]
    windows = _windows([8.0] * 10, [150.0] * 10)
    windows[5]["codes"] = {"OK": 90, "UNAVAILABLE": 10}
    assert verdict(windows, 0.05, 0.20)["failures"] == ["10 calls failed"]


@pytest.mark.soak
@pytest.mark.skipif(os.environ.get("SIFT_SOAK") != "1", reason="a minute of load; set SIFT_SOAK=1")
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
