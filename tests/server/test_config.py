"""sift-serve settings: every field is a flag and a SIFT_* variable, and --help says both."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.__main__ import usable_cores
from server.config import Settings
from tests.conftest import assert_help_names_env


def test_help_names_every_flag_with_its_environment_variable() -> None:
    assert_help_names_env("server", Settings.model_fields)


def test_readme_settings_table_lists_every_flag() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Settings (`sift-serve`)") : readme.index("## Operations")]
    flags = set(re.findall(r"`(--[a-z0-9-]+)`", table))
    assert not [name for name in Settings.model_fields if f"--{name.replace('_', '-')}" not in flags]


def test_environment_variable_sets_the_field_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_MAX_K", "17")
    assert Settings().max_k == 17
    assert Settings(_cli_parse_args=["--max-k", "5"]).max_k == 5


def test_usable_cores_follows_a_cgroup_cpu_limit(tmp_path: Path) -> None:
    """A container limited to 1.5 CPUs on a bigger node gets 2 workers from --workers 0, not one per node
    core."""
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert usable_cores(cpu_max) == min(2, affinity)
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == affinity
    assert usable_cores(tmp_path / "absent") == affinity
