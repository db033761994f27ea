"""sift-train: distil transformer teachers into small students and write a versioned artifact bundle.

`sift-train [options]` trains a bundle; `sift-train report [options]` writes the quality report (see
training/report/)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.config import env_in_help
from training.gate import RetentionError
from training.pipeline import train_bundle
from training.presets import PRESETS
from training.scale import LabelEngine


@env_in_help
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
    """Training data: a product catalogue (.csv/.tsv/.jsonl with title and category path columns), a
    taxonomy-only directory (classes.txt, optional queries.tsv), or a WANDS- or ESCI-style directory;
    unset = the embedded synthetic catalogue."""
    label_level: int | None = Field(None, ge=1)
    """Intent label level of the category tree (1 = top level); unset = the full path (leaf)."""
    output: Path = Path("bundles/default")
    """Directory the bundle is written to; an existing bundle there is replaced atomically."""
    seed: int = Field(0, ge=0)
    """Seed for data generation, splits and training: the same seed gives the same bundle contents."""
    force: bool = False
    """Write the bundle even when a student keeps less than the preset's min_retention of its teacher."""
    resume: bool = False
    """Reuse the stages a previous, interrupted run of the same output finished (cached beside it)."""
    rerun: str | None = None
    """With the stage cache of an earlier run: rerun this stage and every later one (data, intent_teacher,
    intent_student, retrieval, relevance)."""
    label_engine: Literal["local", "ray"] = "local"
    """Where the teachers label the distillation set (soft labels) and embed the catalogue: local (this
    process) or ray (Ray Data actors, one teacher each; needs `pip install 'ray[data]'`). Same results."""
    ray_address: str | None = None
    """With --label-engine ray: the Ray cluster to join (host:6379, ray://host:10001 or auto); unset = the
    RAY_ADDRESS environment variable, else a local Ray instance."""
    ray_cpus: int | None = Field(None, ge=1)
    """With --label-engine ray: teacher actors, one CPU and one torch thread each (a local instance gets
    this many CPUs); unset = every CPU of this machine or of the cluster."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # onnxruntime's quantizer logs every tensor at INFO on the root logger; only Sift's own stages are news.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sift").setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args[:1] == ["report"]:
        from training.report import main as report_main

        report_main(args[1:])
        return
    settings = TrainSettings(_cli_parse_args=args)
    engine = None
    try:
        engine = LabelEngine(settings.label_engine, settings.ray_address, settings.ray_cpus)
        report = train_bundle(
            PRESETS[settings.preset],
            settings.output,
            settings.data,
            settings.seed,
            label_level=settings.label_level,
            force=settings.force,
            resume=settings.resume,
            rerun=settings.rerun,
            engine=engine,
        )
    except (RetentionError, ValueError, FileNotFoundError) as e:
        print(f"sift-train: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    finally:
        if engine is not None:
            engine.close()
    print(_summary(settings.output, report.timings, report.evaluation))


def _summary(output: Path, timings: dict[str, float], evaluation: dict[str, object]) -> str:
    lines = [f"\nbundle written to {output}", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in timings.items()]
    lines += ["", "| figure | value |", "|---|---:|"]
    for section, figures in evaluation.items():
        if isinstance(figures, dict):
            lines += [f"| {section}.{key} | {_cell(value)} |" for key, value in figures.items()]
        else:
            lines.append(f"| {section} | {_cell(figures)} |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    return str(value) if isinstance(value, int | float | str) else json.dumps(value)


if __name__ == "__main__":
    main()
