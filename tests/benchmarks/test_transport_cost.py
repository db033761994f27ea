"""sift-bench http and sift-bench tracing end to end on the tiny bundle: paired p50s and their ratio per call
in results.json and the Markdown table, with the command; the traced server's spans reach the receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main


@pytest.mark.slow
@pytest.mark.parametrize(("command", "ways"), [("http", ["grpc", "http"]), ("tracing", ["off", "on"])])
def test_paired_p50_results(tiny_bundle: Path, tmp_path: Path, command: str, ways: list[str]) -> None:
    out = tmp_path / command
    args = ["--bundle", str(tiny_bundle), "--calls", "intent,relevance", "--candidates", "3"]
    main([command, *args, "--rounds", "2", "--per-round", "20", "--warmup", "5", "--output", str(out)])
    result = json.loads((out / "results.json").read_text())
    assert result["ways"] == ways and result["bundle_version"].startswith("tiny-")
    assert set(result["results"]) == {"ClassifyIntent", "ScoreRelevance"}
    for row in result["results"].values():
        assert [len(row["rounds_p50_ms"][way]) for way in ways] == [2, 2]
        first, second = (row["rounds_p50_ms"][way] for way in ways)
        ratios = sorted(b / a for a, b in zip(first, second, strict=True))
        assert row["p50_ratio"]["min"] == pytest.approx(ratios[0])
    readme = (out / "README.md").read_text()
    assert result["environment"]["command"] in readme and "| ClassifyIntent |" in readme
    if command == "tracing":
        spans = int(result["receiver"].split()[1])
        assert spans >= 2 * (5 + 2 * 20)  # a call span and at least one step for each traced call
