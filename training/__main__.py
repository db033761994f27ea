"""sift-train: train students from a MiniLM teacher and write a versioned artifact bundle."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.pipeline import train_bundle
from training.presets import PRESETS


class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIFT_",
        cli_kebab_case=True,
        cli_prog_name="sift-train",
        use_attribute_docstrings=True,
        extra="ignore",
    )

    preset: Literal["tiny", "default", "full"] = "tiny"
    """Size of the run: tiny (<= 3 minutes on 2 cores, the embedded default), default, or full."""
    data: Path | None = None
    """Product catalogue (.csv, .tsv or .jsonl with title and category path columns); unset = the embedded
    synthetic catalogue."""
    output: Path = Path("bundles/default")
    """Directory the bundle is written to; an existing bundle there is replaced atomically."""
    seed: int = Field(0, ge=0)
    """Seed for data generation, splits and training: the same seed gives the same bundle contents."""


def main(argv: list[str] | None = None) -> None:
    settings = TrainSettings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    # onnxruntime's quantizer logs every tensor at INFO on the root logger; only Sift's own stages are news.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sift").setLevel(logging.INFO)
    report = train_bundle(PRESETS[settings.preset], settings.output, settings.data, settings.seed)
    print(_summary(settings.output, report.timings, report.evaluation))


def _summary(output: Path, timings: dict[str, float], evaluation: dict[str, object]) -> str:
    lines = [f"\nbundle written to {output}", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in timings.items()]
    lines += ["", "| figure | value |", "|---|---:|"]
    for section, figures in evaluation.items():
        if isinstance(figures, dict):
            lines += [f"| {section}.{key} | {value} |" for key, value in figures.items()]
        else:
            lines.append(f"| {section} | {json.dumps(figures)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
