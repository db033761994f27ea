"""sift-train: distil transformer teachers into small students and write a versioned artifact bundle.

`sift-train [options]` trains a bundle; `sift-train report [options]` writes the quality report (see
training/report/); `sift-train update --bundle OLD --data FILE --output NEW [--remove IDS]` changes a
bundle's catalogue without retraining (training/catalogue_update.py)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.config import env_in_help
from training.data.columns import Columns
from training.gate import RetentionError
from training.pipeline import train_bundle
from training.presets import PRESETS, Preset
from training.scale import LabelEngine


@env_in_help
class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIFT_",
        cli_kebab_case=True,
        cli_prog_name="sift-train",
        cli_implicit_flags=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    preset: Literal["tiny", "default", "full"] = "tiny"
    """Size of the run: tiny (<= 3 minutes on 2 cores, the embedded default), default, or full."""
    data: Path | None = None
    """Training data: a product catalogue (.csv/.tsv/.jsonl with title and category path columns), a pairs
    file (query, product title and relevance label columns, e.g. ESCI's), a taxonomy-only directory
    (classes.txt, optional queries.tsv), or a WANDS- or ESCI-style directory; unset = the embedded synthetic
    catalogue."""
    title_column: str | None = None
    """Column of --data holding the product title; unset = the first of title, product_name, name,
    product_title."""
    category_column: str | None = None
    """Column of --data holding the category path (levels joined by ">", " >> " or "/"), or a taxonomy's
    query class; unset = the first of category, category_path, product_class (query_class in queries.tsv)."""
    id_column: str | None = None
    """Column of --data holding the product id; unset = id or product_id, else row numbers."""
    query_column: str | None = None
    """Column of --data holding the query text (a pairs file, a taxonomy's queries.tsv); unset = query."""
    label_column: str | None = None
    """Column of a pairs file holding the relevance label (E/S/C/I or Exact/Partial/Irrelevant); unset =
    esci_label, else label."""
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
    keep_stages: bool = False
    """Keep the stage cache (`.<output>.stages/` beside the bundle) after the bundle is written: it holds the
    teachers, which `sift-train report --parts '["served_relevance"]'` measures the bundle's relevance
    student against. Without it the cache is deleted."""
    relevance_cosine: Literal["query_encoder", "query_student", "query_static"] | None = None
    """Which query model the relevance student's cosine feature reads, in training and serving alike:
    query_encoder (the hashed n-gram encoder, tens of microseconds), query_student (the transformer query
    student Search uses, when one ships: closer to the teacher on real query text, about 1.4 ms more per
    ScoreRelevance served) or query_static (a static word-piece model of MiniLM's whole vocabulary, shipped
    for it: a lookup and a mean); unset = the preset's (query_static)."""
    relevance_distill_pairs: int | None = Field(None, ge=0)
    """Unlabelled (query, product) pairs the relevance teacher labels for the text relevance student
    (BERT2DNN's distillation set); unset = the preset's (8,000 tiny, 200,000 default, 1,000,000 full)."""
    relevance_word_runs: float | None = Field(None, ge=0.0, le=1.0)
    """Share of the relevance distillation set's generated query texts that are random runs of two to four
    vocabulary words (queries about anything, most far from the catalogue); unset = the preset's."""
    label_engine: Literal["local", "ray"] = "local"
    """Where the teachers label the distillation set (soft labels) and embed the catalogue: local (this
    process) or ray (Ray Data actors, one teacher each; needs `pip install 'ray[data]'`). Same results."""
    ray_address: str | None = None
    """With --label-engine ray: the Ray cluster to join (host:6379, ray://host:10001 or auto); unset = the
    RAY_ADDRESS environment variable, else a local Ray instance."""
    ray_cpus: int | None = Field(None, ge=1)
    """With --label-engine ray: teacher actors, one CPU and one torch thread each (a local instance gets
    this many CPUs); unset = every CPU of this machine or of the cluster."""

    def columns(self) -> Columns:
        return Columns(
            title=self.title_column,
            category=self.category_column,
            id=self.id_column,
            query=self.query_column,
            label=self.label_column,
        )


def parse_settings(args: list[str]) -> TrainSettings:
    """Settings from the command line and SIFT_* variables. Bool flags take no value (`--force`,
    `--no-force`); the older `--force true` still parses."""
    flags = [
        f"--{name.replace('_', '-')}"
        for name, f in TrainSettings.model_fields.items()
        if f.annotation is bool
    ]
    return TrainSettings(_cli_parse_args=bare_bool_flags(args, flags))


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def bare_bool_flags(args: list[str], flags: Iterable[str]) -> list[str]:
    """`--force true`, `--force=false` and the like as `--force` / `--no-force`: argparse's boolean flags
    refuse a value, but scripts written for the older CLI pass one."""
    names = set(flags)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in names and not eq and i + 1 < len(args) and args[i + 1].lower() in _TRUE | _FALSE:
            value, i = args[i + 1], i + 1
        if name in names and value.lower() in _TRUE | _FALSE:
            arg = name if value.lower() in _TRUE else "--no-" + name[2:]
        out.append(arg)
        i += 1
    return out


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
    if args[:1] == ["update"]:
        from training.catalogue_update import update_main

        update_main(args[1:])
        return
    try:
        settings = parse_settings(args)
    except ValidationError as e:  # a flag's value out of its range: name it, without a traceback
        problems = "; ".join(
            f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()
        )
        print(f"sift-train: {problems}", file=sys.stderr)
        raise SystemExit(2) from e
    engine = None
    try:
        engine = LabelEngine(settings.label_engine, settings.ray_address, settings.ray_cpus)
        report = train_bundle(
            preset_of(settings),
            settings.output,
            settings.data,
            settings.seed,
            label_level=settings.label_level,
            columns=settings.columns(),
            force=settings.force,
            resume=settings.resume,
            rerun=settings.rerun,
            keep_stages=settings.keep_stages,
            engine=engine,
        )
    except (RetentionError, ValueError, FileNotFoundError) as e:
        print(f"sift-train: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    finally:
        if engine is not None:
            engine.close()
    print(_summary(settings.output, report.timings, report.evaluation))


def preset_of(settings: TrainSettings) -> Preset:
    """The named preset with the relevance flags that override it."""
    preset = PRESETS[settings.preset]
    if settings.relevance_cosine is not None:
        preset = replace(preset, methods=replace(preset.methods, relevance_cosine=settings.relevance_cosine))
    if settings.relevance_distill_pairs is not None:
        preset = replace(preset, relevance_distill_pairs=settings.relevance_distill_pairs)
    if settings.relevance_word_runs is not None:
        preset = replace(preset, relevance_word_runs=settings.relevance_word_runs)
    return preset


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
