"""sift-train's settings: every field is a flag and a SIFT_* variable, and --help says both."""

from __future__ import annotations

import pytest

from tests.conftest import assert_help_names_env
from training.__main__ import TrainSettings, main, parse_settings, preset_of
from training.data.columns import Columns
from training.presets import PRESETS


def test_help_names_every_flag_with_its_environment_variable() -> None:
    assert_help_names_env("training", TrainSettings.model_fields)


def test_bool_flags_take_no_value() -> None:
    assert parse_settings(["--force", "--resume"]).force is True
    assert parse_settings(["--force", "--seed", "3"]).seed == 3
    settings = parse_settings(["--no-force"])
    assert (settings.force, settings.resume, settings.keep_stages) == (False, False, False)
    assert parse_settings(["--keep-stages"]).keep_stages is True


def test_bool_flags_still_take_the_older_value_form(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_settings(["--force", "true", "--resume=1"]).resume is True
    assert parse_settings(["--force", "false"]).force is False
    assert parse_settings(["--force=false", "--resume", "yes"]).force is False
    monkeypatch.setenv("SIFT_FORCE", "1")
    assert parse_settings([]).force is True
    assert parse_settings(["--no-force"]).force is False


def test_column_flags() -> None:
    settings = parse_settings(
        ["--title-column", "product_name", "--category-column", "cat_l1", "--id-column", "orig_row"]
    )
    assert settings.columns() == Columns(title="product_name", category="cat_l1", id="orig_row")
    assert parse_settings([]).columns() == Columns()


def test_relevance_cosine_flag() -> None:
    assert parse_settings([]).relevance_cosine is None
    assert parse_settings(["--relevance-cosine", "query_student"]).relevance_cosine == "query_student"


def test_relevance_flags_override_the_preset() -> None:
    assert preset_of(parse_settings([])) == PRESETS["tiny"]
    flags = "--preset tiny --relevance-distill-pairs 500 --relevance-word-runs 0.25"
    preset = preset_of(parse_settings([*flags.split(), "--relevance-cosine", "query_encoder"]))
    assert preset.name == "tiny" and preset.relevance_distill_pairs == 500
    assert preset.relevance_word_runs == 0.25 and preset.methods.relevance_cosine == "query_encoder"


def test_a_bad_flag_value_is_named_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--relevance-cosine", "teacher"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "sift-train: --relevance-cosine: Input should be 'query_encoder', 'query_student' or 'query_static'"
    )
    assert "Traceback" not in err
