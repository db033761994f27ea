"""sift-train's settings: every field is a flag and a SIFT_* variable, and --help says both."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT
from training.__main__ import TrainSettings


def test_help_names_every_flag_with_its_environment_variable() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "training", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for name in TrainSettings.model_fields:
        assert f"--{name.replace('_', '-')}" in flat
        assert f"[env: SIFT_{name.upper()}]" in flat, name
