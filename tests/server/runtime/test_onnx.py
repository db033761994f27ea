"""OnnxModel's expected time per row, from its own runs of many rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.bundle import load_bundle
from server.runtime.onnx import SAMPLE_ROWS


def test_row_seconds_learns_from_runs_of_many_rows_only(tiny_bundle: Path) -> None:
    model = load_bundle(tiny_bundle).intent
    assert model is not None and model.row_seconds is None and model.expected_seconds(10) is None
    model.run({"ids": np.ones((SAMPLE_ROWS - 1, 4), dtype=np.int64)})
    assert model.row_seconds is None  # a small run is mostly fixed cost
    model.run({"ids": np.ones((SAMPLE_ROWS, 4), dtype=np.int64)})
    first = model.row_seconds
    assert first is not None and first > 0
    assert model.expected_seconds(100) == 100 * first
    model.run({"ids": np.ones((4 * SAMPLE_ROWS, 4), dtype=np.int64)})
    assert model.row_seconds is not None and model.row_seconds != first
