"""sift-bench batch end to end on the tiny bundle: every call at every batch size, single and batch sides
from the same run, written as JSON and a Markdown table stamped with the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main


@pytest.mark.slow
def test_batch_writes_per_query_costs_and_ratios(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "batch"
    main(
        [
            "batch",
            "--bundle", str(tiny_bundle),
            "--sizes", "1,4",
            "--repeats", "2",
            "--rounds", "3",
            "--warmup-rounds", "1",
            "--search-modes", ",lexical",
            "--output", str(out),
        ]
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["bundle_version"].startswith("tiny-")
    calls = [
        "ClassifyIntent",
        "Search (bundle default mode, k 10)",
        "Search (lexical mode, k 10)",
        "EmbedQuery",
    ]
    assert [(r["call"], r["batch_size"]) for r in result["rows"]] == [(c, n) for c in calls for n in (1, 4)]
    for row in result["rows"]:
        assert len(row["blocks"]) == 2
        for block in row["blocks"]:
            assert block["single_us"] > 0 and block["batch_us"] > 0
            assert block["ratio"] == pytest.approx(block["batch_us"] / block["single_us"])
        assert row["batch_over_single"]["min"] <= row["batch_over_single"]["median"]
    readme = (out / "README.md").read_text()
    assert result["environment"]["command"] in readme and "| EmbedQuery | 4 |" in readme
