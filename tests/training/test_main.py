"""sift-train's settings: every field is a flag and a SIFT_* variable, and --help says both."""

from __future__ import annotations

from tests.conftest import assert_help_names_env
from training.__main__ import TrainSettings


def test_help_names_every_flag_with_its_environment_variable() -> None:
    assert_help_names_env("training", TrainSettings.model_fields)
