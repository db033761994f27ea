"""The training run, as its stages in order: data -> intent teachers -> intent student -> two-tower
retrieval -> relevance with mined rules -> gated int8 ONNX -> a validated bundle.

Each capability's data, training, export and evaluation live in its own module (training/intent.py,
training/retrieval.py, training/relevance.py); this module only orders them. Each stage is timed, shows a
progress bar, and is cached under `<output>.stages/` (training/stages.py), so that a run can resume from
the last finished stage (`--resume`) or rerun from one stage on (`--rerun STAGE`). The cache is deleted
when the bundle is written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from server.bundle import load_bundle
from server.featurize import Featurizer, FeaturizerConfig
from server.rules import Rules
from training.bundle_writer import write_manifest
from training.data.columns import GUESS, Columns
from training.data.dataset import TrainingData, load_training_data
from training.gate import check_retention
from training.intent import (
    IntentSets,
    answers_only,
    build_intent_sets,
    calibrate_intent,
    evaluate_intent,
    export_intent,
    intent_paired,
    stack_logits,
    train_intent_student,
    train_intent_teacher,
)
from training.presets import Preset
from training.relevance import export_relevance, train_relevance
from training.relevance_bags import export_text_bags
from training.retrieval import export_retrieval, train_retrieval
from training.rules import mine_intent_rules
from training.scale import LabelEngine
from training.stages import RunReport, StageCache
from training.students import num_parameters
from training.teachers import minilm_dir


def fp32_sibling(bundle: Path) -> Path:
    """Where the fp32 ONNX exports of a bundle's students are kept: `<bundle>.fp32/`, beside it."""
    return bundle.with_name(bundle.name + ".fp32")


def stage_directory(bundle: Path) -> Path:
    """Where a bundle's training run caches its stages: `.<bundle>.stages/`, beside it."""
    return bundle.parent / f".{bundle.name}.stages"


def train_bundle(
    preset: Preset,
    output: Path,
    data_path: Path | None,
    seed: int = 0,
    *,
    label_level: int | None = None,
    columns: Columns = GUESS,
    force: bool = False,
    resume: bool = False,
    rerun: str | None = None,
    keep_stages: bool = False,
    engine: LabelEngine | None = None,
) -> RunReport:
    """Trains every component and writes a validated bundle to `output` (replaced atomically). `engine`
    runs the teachers' bulk labelling and product embedding: in this process (default) or on Ray. The stage
    cache is deleted once the bundle is written, unless `keep_stages` (stage_directory(output))."""
    report = RunReport()
    start = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    stages = StageCache(stage_directory(output), report, resume, rerun)
    work = Path(tempfile.mkdtemp(prefix=".sift-train-", dir=output.parent))
    try:
        _train(preset, work, data_path, seed, label_level, columns, force, stages, report, engine)
        if output.exists():
            shutil.rmtree(output)
        work.chmod(0o755)  # mkdtemp makes it private; a bundle is read by a server user too
        work.rename(output)
        shutil.rmtree(fp32_sibling(output), ignore_errors=True)
        fp32_sibling(work).rename(fp32_sibling(output))
        if not keep_stages:
            shutil.rmtree(stages.directory, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(fp32_sibling(work), ignore_errors=True)
    report.timings["total"] = round(time.perf_counter() - start, 2)
    return report


@dataclass
class Prepared:
    data: TrainingData
    sets: IntentSets


def _train(
    preset: Preset,
    out: Path,
    data_path: Path | None,
    seed: int,
    label_level: int | None,
    columns: Columns,
    force: bool,
    stages: StageCache,
    report: RunReport,
    engine: LabelEngine | None = None,
) -> None:
    torch.manual_seed(seed)
    tmp = out / "_fp32"
    tmp.mkdir()
    ev = report.evaluation
    shutil.copyfile(minilm_dir() / "tokenizer.json", out / "tokenizer.json")
    featurizer = Featurizer(out / "tokenizer.json", FeaturizerConfig(num_buckets=preset.num_buckets))

    # 1. data: the catalogue and queries, and the intent distillation sets.
    def prepare() -> Prepared:
        data = load_training_data(
            data_path, preset.num_products, preset.heldout_fraction, seed, label_level, columns
        )
        return Prepared(data, build_intent_sets(data, preset, featurizer, seed))

    prepared = stages.run("data", prepare)
    data, sets = prepared.data, prepared.sets
    ev["data"] = {
        "source": data.source,
        "labels": len(data.labels),
        "products": len(data.titles) if data.serves_products else 0,
        "intent_distillation_texts": len(sets.texts),
        "intent_labelled_texts": int((sets.hard >= 0).sum()),
        "intent_sources": sets.sources,
        "intent_eval": f"{sets.eval_name} ({len(sets.eval_texts)} queries)",
    }

    # 2-3. intent: teachers (only their answers are kept), then the student, exported and evaluated.
    teachers = stages.run(
        "intent_teacher",
        lambda: [
            answers_only(train_intent_teacher(name, data, sets, preset, seed, engine))
            for name in preset.methods.teachers
        ],
    )
    stacked = stack_logits([t.train_logits for t in teachers], preset.temperature)
    student, history = stages.run(
        "intent_student",
        lambda: train_intent_student(sets, stacked, featurizer, len(data.labels), preset, seed),
    )
    calibration = calibrate_intent(student, featurizer, sets)
    intent_gate = export_intent(student, featurizer, sets, tmp, out)
    gate_samples = {"intent": intent_paired(teachers, sets, featurizer, out, preset)}
    ev["intent"] = evaluate_intent(
        teachers, student, sets, featurizer, out, tmp, preset, history, gate_samples["intent"]
    )
    ev["intent"]["quantization"] = intent_gate
    ev["intent"]["calibration"] = calibration

    # 4-5. retrieval and relevance, when the data has a catalogue to serve.
    components = ["intent"]
    rules = Rules({}, (), (), data.grades)
    bags = None
    if data.catalogue is not None and data.serves_products:
        retrieval = stages.run("retrieval", lambda: train_retrieval(data, featurizer, preset, seed, engine))
        exported = export_retrieval(retrieval, featurizer, data, out, tmp, preset, seed)
        ev["retrieval"], gate_samples["retrieval"] = exported.evaluation, exported.paired
        relevance = stages.run(
            "relevance", lambda: train_relevance(data, featurizer, out, retrieval, preset, seed)
        )
        ev["relevance"], rules, relevance_paired = export_relevance(relevance, out, tmp, preset)
        if relevance.kind == "text_mlp":  # served as two graphs, the product side computed here
            bags = export_text_bags(relevance.head, relevance.inputs("eval"), out, tmp, preset.num_buckets)
            ev["relevance"]["served_as_bags"] = bags.evaluation
        if relevance_paired is not None:
            gate_samples["relevance"] = relevance_paired
        components += ["query_encoder", "index", "relevance"]

    # Golden intent rules, then every rule into rules.json.
    intent_table, intent_stats = (
        mine_intent_rules(
            data.labels, featurizer.words, sets.dev_texts, sets.dev_labels, sets.texts, sets.hard
        )
        if preset.methods.rules
        else ({}, {"kept": False})
    )
    rules = replace(rules, intent_queries=intent_table)
    ev.setdefault("rules", {})["intent_exact_query"] = intent_stats
    (out / "rules.json").write_text(
        json.dumps(rules.to_json(data.labels), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    # The gates, then the manifest, then the server's own load of the bundle.
    ev["sizes"] = {
        "intent_teacher_parameters": {t.name: t.num_parameters for t in teachers},
        "intent_student_parameters": num_parameters(student),
    }
    if "retrieval" in ev:
        ev["sizes"]["encoder_student_parameters"] = num_parameters(retrieval.encoder)
    ev["retention_gate"] = check_retention(gate_samples, preset.min_retention, force, seed)
    # The fp32 exports leave the bundle (the server serves int8) but are kept beside it for sift-bench models.
    tmp.rename(fp32_sibling(out))
    dim = retrieval.product_vecs.shape[-1] if "query_encoder" in components else 0
    views = preset.methods.views if "index" in components else 0
    extras = (
        {
            "query_student": exported.query_student,
            "query_static": exported.query_static,
            "lexical": exported.lexical,
            "arrays": exported.arrays,
        }
        if "index" in components
        else {}
    )
    if bags is not None:
        extras["bags"] = bags
    if "relevance" in components:
        extras["relevance_query_vector"] = relevance.cosine
    write_manifest(out, preset, data, dim, views, components, ev, report.timings, seed, **extras)
    bundle = load_bundle(out)  # the server's own validation: a bundle that would be refused fails training
    bundle.warm_up()
    ev["bundle_bytes"] = sum(f.stat().st_size for f in out.iterdir())
