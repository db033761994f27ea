"""sift-serve settings: every field is a flag and a SIFT_* variable, and --help says both."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.config import Settings
from tests.conftest import ROOT


def test_help_names_every_flag_with_its_environment_variable() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in flat
        assert f"[env: SIFT_{name.upper()}]" in flat, name


def test_environment_variable_sets_the_field_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_MAX_K", "17")
    assert Settings().max_k == 17
    assert Settings(_cli_parse_args=["--max-k", "5"]).max_k == 5
