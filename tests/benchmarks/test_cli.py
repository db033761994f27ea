"""sift-bench end to end on the tiny bundle: the load command writes its JSON, Markdown and plots, with
Sift's figures as ratios to the echo floor measured in the same run; unreachable targets fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from tests.conftest import free_port


@pytest.mark.slow
def test_load_writes_results_with_echo_ratios(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "load"
    main(
        [
            "load",
            "--bundle", str(tiny_bundle),
            "--workload", "intent=0.5,search=0.3,relevance=0.2",
            "--candidates", "20",
            "--concurrency", "1,4",
            "--rates", "50",
            "--duration", "0.6",
            "--warmup", "0.2",
            "--repeats", "2",
            "--processes", "1",
            "--output", str(out),
        ]
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["targets"] == ["echo", "sift"]
    assert result["bundle_version"].startswith("tiny-")
    assert result["environment"]["machine"]["cores"] >= 1 and "grpcio" in result["environment"]["packages"]
    closed = result["results"]["closed"]
    assert [level["level"] for level in closed] == [1, 4]
    sift = closed[0]["by_target"]["sift"]
    assert len(sift["repeats"]) == 2
    assert set(sift["repeats"][0]["by_method_ms"]) == {"ClassifyIntent", "Search", "ScoreRelevance"}
    assert sift["median"]["codes"] == {"OK": sum(r["calls"] for r in sift["repeats"])}
    assert sift["ratio_to_floor"]["p50"]["median"] > 0
    assert any(
        k.startswith("sift_inference_duration_seconds") for k in sift["repeats"][0]["server_breakdown"]
    )
    open_level = result["results"]["open"][0]
    assert open_level["level"] == 50 and "send_check" in open_level["by_target"]["sift"]["repeats"][0]
    readme = (out / "README.md").read_text()
    assert "p50 ratio" in readme and result["environment"]["command"] in readme
    for plot in ("latency_cdf.png", "throughput_vs_concurrency.png", "latency_vs_load.png"):
        assert (out / plot).stat().st_size > 1000


def test_unreachable_target_is_a_clear_error(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit, match=f"{target} is not serving Sift .*UNAVAILABLE"):
        main(["load", "--target", target, "--output", str(tmp_path)])
