"""The training run: data -> intent teachers -> intent student -> two-tower retrieval -> relevance with mined
rules -> gated int8 ONNX -> a validated bundle.

Each stage is timed, shows a progress bar, and caches its result under `<output>.stages/`, so that a run
can resume from the last finished stage (`--resume`) or rerun from one stage on (`--rerun STAGE`). The
cache holds arrays and student weights only, and is deleted when the bundle is written.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from server.bundle import MANIFEST, SCHEMA_VERSION, category_id, load_bundle, sha256_file
from server.featurize import RELEVANCE_FEATURES, Featurizer, FeaturizerConfig
from server.rules import GRADES, Rules, apply, clip_to_grade
from training.data.dataset import TrainingData, load_training_data
from training.data.queries import title_substrings
from training.export import export_onnx, run_onnx
from training.intent import (
    IntentSets,
    IntentTeacher,
    build_intent_sets,
    stack_logits,
    train_intent_student,
)
from training.intent import train_intent_teacher as _train_intent_teacher
from training.metrics import accuracy, macro_f1
from training.onnx_teacher import quantize_with_gate
from training.presets import Preset
from training.relevance import (
    GRADE_VALUES,
    Pairs,
    bm25_scores,
    evaluate_ranking,
    judged_pairs,
    make_pairs,
    pair_features,
    train_relevance_head,
)
from training.retrieval import embed_products, evaluate_retrieval, train_query_encoder, write_index
from training.rules import mine_intent_rules, mine_post_rules, mine_pre_rules, rule_report
from training.scale import LabelEngine
from training.students import num_parameters
from training.teachers import TEACHERS, SentenceTeacher, minilm_dir, teacher_dir

log = logging.getLogger("sift.train")
T = TypeVar("T")

STAGES = ("data", "intent_teacher", "intent_student", "retrieval", "relevance")
# int8 must agree with fp32 at least this well, or the next quantization method is tried (then fp32).
PARITY = {"intent": 0.995, "query_encoder": 0.98, "relevance": 0.99}


class RetentionError(RuntimeError):
    """A student keeps less of its teacher's quality than the preset's min_retention."""


@dataclass
class RunReport:
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)


class StageCache:
    """Runs named stages in order, timing each; with `resume`, a stage finished by an earlier run is loaded
    instead of rerun, except `rerun` and every stage after it."""

    def __init__(self, directory: Path, report: RunReport, resume: bool, rerun: str | None) -> None:
        if rerun is not None and rerun not in STAGES:
            raise ValueError(f"--rerun {rerun}: not one of {STAGES}")
        self.directory = directory
        self.report = report
        self.resume = resume or rerun is not None
        self.fresh_from = STAGES.index(rerun) if rerun else len(STAGES)
        directory.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[], T]) -> T:
        path = self.directory / f"{name}.pt"
        if self.resume and path.is_file() and STAGES.index(name) < self.fresh_from:
            log.info("stage %s: resumed from %s", name, path)
            return torch.load(path, weights_only=False)  # our own cache, written by this code
        log.info("stage %s ...", name)
        start = time.perf_counter()
        result = fn()
        self.report.timings[name] = round(time.perf_counter() - start, 2)
        torch.save(result, path)
        log.info("stage %s done in %.1f s", name, self.report.timings[name])
        return result


def fp32_sibling(bundle: Path) -> Path:
    """Where the fp32 ONNX exports of a bundle's students are kept: `<bundle>.fp32/`, beside it."""
    return bundle.with_name(bundle.name + ".fp32")


def train_bundle(
    preset: Preset,
    output: Path,
    data_path: Path | None,
    seed: int = 0,
    *,
    label_level: int | None = None,
    force: bool = False,
    resume: bool = False,
    rerun: str | None = None,
    engine: LabelEngine | None = None,
) -> RunReport:
    """Trains every component and writes a validated bundle to `output` (replaced atomically). `engine`
    runs the teachers' bulk labelling and product embedding: in this process (default) or on Ray."""
    report = RunReport()
    start = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    stages = StageCache(output.parent / f".{output.name}.stages", report, resume, rerun)
    work = Path(tempfile.mkdtemp(prefix=".sift-train-", dir=output.parent))
    try:
        _train(preset, work, data_path, seed, label_level, force, stages, report, engine)
        if output.exists():
            shutil.rmtree(output)
        work.chmod(0o755)  # mkdtemp makes it private; a bundle is read by a server user too
        work.rename(output)
        shutil.rmtree(fp32_sibling(output), ignore_errors=True)
        fp32_sibling(work).rename(fp32_sibling(output))
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


def train_intent_teacher(
    name: str,
    data: TrainingData,
    sets: IntentSets,
    preset: Preset,
    seed: int,
    engine: LabelEngine | None = None,
) -> IntentTeacher:
    teacher = _train_intent_teacher(name, data, sets, preset, seed, engine)
    return replace(teacher, model=None, tokenizer=None)  # only its answers are kept (and cached)


def _train(
    preset: Preset,
    out: Path,
    data_path: Path | None,
    seed: int,
    label_level: int | None,
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

    def prepare() -> Prepared:
        data = load_training_data(data_path, preset.num_products, preset.heldout_fraction, seed, label_level)
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

    teachers = stages.run(
        "intent_teacher",
        lambda: [
            train_intent_teacher(name, data, sets, preset, seed, engine) for name in preset.methods.teachers
        ],
    )
    stacked = stack_logits([t.train_logits for t in teachers], preset.temperature)
    student, history = stages.run(
        "intent_student",
        lambda: train_intent_student(sets, stacked, featurizer, len(data.labels), preset, seed),
    )
    intent_gate = _export_intent(student, featurizer, sets, tmp, out)
    ev["intent"] = _evaluate_intent(teachers, student, sets, featurizer, out, tmp, preset, history)
    ev["intent"]["quantization"] = intent_gate

    components = ["intent"]
    rules = Rules({}, (), ())
    if data.catalogue is not None and data.serves_products:
        retrieval = stages.run("retrieval", lambda: _train_retrieval(data, featurizer, preset, seed, engine))
        ev["retrieval"] = _export_retrieval(retrieval, featurizer, data, out, tmp, preset)
        relevance = stages.run(
            "relevance", lambda: _train_relevance(data, featurizer, out, retrieval, preset, seed)
        )
        ev["relevance"], rules = _export_relevance(relevance, out, tmp, preset)
        components += ["query_encoder", "index", "relevance"]
    intent_table, intent_stats = (
        mine_intent_rules(
            data.labels, featurizer.words, sets.dev_texts, sets.dev_labels, sets.texts, sets.hard
        )
        if preset.methods.rules
        else ({}, {"kept": False})
    )
    rules = Rules(intent_table, rules.relevance_pre, rules.relevance_post)
    ev.setdefault("rules", {})["intent_exact_query"] = intent_stats
    (out / "rules.json").write_text(
        json.dumps(rules.to_json(data.labels), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    ev["sizes"] = {
        "intent_teacher_parameters": {t.name: t.num_parameters for t in teachers},
        "intent_student_parameters": num_parameters(student),
    }
    if "retrieval" in ev:
        ev["sizes"]["encoder_student_parameters"] = num_parameters(retrieval.encoder)
    retention = _check_retention(ev, preset, force)
    ev["retention_gate"] = retention
    # The fp32 exports leave the bundle (the server serves int8) but are kept beside it for sift-bench models.
    tmp.rename(fp32_sibling(out))
    dim = retrieval.product_vecs.shape[-1] if "query_encoder" in components else 0
    views = preset.methods.views if "index" in components else 0
    _write_manifest(out, preset, data, dim, views, components, ev, report.timings, seed)
    bundle = load_bundle(out)  # the server's own validation: a bundle that would be refused fails training
    bundle.warm_up()
    ev["bundle_bytes"] = sum(f.stat().st_size for f in out.iterdir())


def _export_intent(
    student: torch.nn.Module, featurizer: Featurizer, sets: IntentSets, tmp: Path, out: Path
) -> dict:
    check_texts = (sets.dev_texts + sets.eval_texts + sets.texts[:2000])[:4000]
    ids = featurizer.batch_ids(check_texts)
    export_onnx(student, torch.from_numpy(ids[:2]), "ids", "probabilities", tmp / "intent.onnx")
    fp32 = run_onnx(tmp / "intent.onnx", "intent", "ids", ids).argmax(1)
    return quantize_with_gate(
        tmp / "intent.onnx",
        out / "intent.onnx",
        lambda path: float(np.mean(run_onnx(path, "intent", "ids", ids).argmax(1) == fp32)),
        PARITY["intent"],
    )


def _evaluate_intent(
    teachers: list[IntentTeacher],
    student: torch.nn.Module,
    sets: IntentSets,
    featurizer: Featurizer,
    out: Path,
    tmp: Path,
    preset: Preset,
    history: list[float],
) -> dict[str, Any]:
    known = sets.eval_labels >= 0
    gold = sets.eval_labels[known]
    eval_ids = featurizer.batch_ids(sets.eval_texts)
    student_probs = run_onnx(out / "intent.onnx", "intent", "ids", eval_ids)
    student_pred = student_probs.argmax(1)
    stacked = stack_logits([t.eval_logits for t in teachers], preset.temperature)
    teacher_pred = stacked.argmax(1)
    result: dict[str, Any] = {"eval": sets.eval_name, "eval_queries": int(known.sum())}
    for t in teachers:
        result[f"teacher_{t.name}_zero_shot_accuracy"] = round(
            accuracy(t.zero_shot_eval_logits.argmax(1)[known], gold), 4
        )
        result[f"teacher_{t.name}_accuracy"] = round(accuracy(t.eval_logits.argmax(1)[known], gold), 4)
        result[f"teacher_{t.name}_train_seconds"] = t.train_seconds
    result["teacher_accuracy"] = round(accuracy(teacher_pred[known], gold), 4)
    result["teacher_macro_f1"] = round(macro_f1(teacher_pred[known], gold), 4)
    result["student_int8_accuracy"] = round(accuracy(student_pred[known], gold), 4)
    result["student_int8_macro_f1"] = round(macro_f1(student_pred[known], gold), 4)
    result["student_teacher_top1_agreement"] = round(float(np.mean(student_pred == teacher_pred)), 4)
    result["retention"] = round(result["student_int8_accuracy"] / max(result["teacher_accuracy"], 1e-9), 4)
    if sets.dev_texts:
        dev_known = sets.dev_labels >= 0
        dev_student = run_onnx(
            out / "intent.onnx", "intent", "ids", featurizer.batch_ids(sets.dev_texts)
        ).argmax(1)
        dev_teacher = stack_logits([t.dev_logits for t in teachers], preset.temperature).argmax(1)
        result["dev_teacher_accuracy"] = round(
            accuracy(dev_teacher[dev_known], sets.dev_labels[dev_known]), 4
        )
        result["dev_student_int8_accuracy"] = round(
            accuracy(dev_student[dev_known], sets.dev_labels[dev_known]), 4
        )
    if (~known).any():
        # Queries of no known class should get low confidence.
        result["unknown_class_mean_top_probability"] = round(float(student_probs[~known].max(1).mean()), 4)
        result["known_class_mean_top_probability"] = round(float(student_probs[known].max(1).mean()), 4)
    result["student_loss_by_epoch"] = [round(x, 4) for x in history]
    return result


@dataclass
class RetrievalResult:
    product_vecs: np.ndarray
    encoder: torch.nn.Module
    eval_targets: np.ndarray
    eval_teacher_vecs: np.ndarray
    eval_texts: list[str]
    teacher_name: str
    teacher_parameters: int
    train_queries: list = field(default_factory=list)
    train_targets: np.ndarray | None = None


def _train_retrieval(
    data: TrainingData, featurizer: Featurizer, preset: Preset, seed: int, engine: LabelEngine | None = None
) -> RetrievalResult:
    """The big teacher embeds products (several views each) and the training queries; the student learns
    to put queries where the teacher does. `engine` runs those two bulk encodings (local or Ray)."""
    name = preset.methods.product_teacher
    bulk = engine or LabelEngine()
    teacher = SentenceTeacher(teacher_dir(name))
    product_vecs = embed_products(
        lambda texts: bulk.encode(name, texts, local=teacher, desc="teacher: products"),
        data.catalogue,
        preset.methods.views,
    )
    labels = data.product_labels.tolist()
    train_q = title_substrings(
        data.titles, labels, data.train_rows, preset.queries_per_product, featurizer, seed
    )
    eval_q = title_substrings(data.titles, labels, data.heldout_rows, 3, featurizer, seed + 1)
    targets = bulk.encode(name, [q.text for q in train_q], local=teacher, desc="teacher: queries")
    encoder, _ = train_query_encoder(train_q, targets, product_vecs, data.titles, featurizer, preset, seed)
    return RetrievalResult(
        product_vecs,
        encoder,
        np.array([q.product_row for q in eval_q]),
        teacher.encode([q.text for q in eval_q], desc="teacher: held-out queries"),
        [q.text for q in eval_q],
        TEACHERS[preset.methods.product_teacher],
        teacher.num_parameters,
        train_q,
        targets,
    )


def _export_retrieval(
    r: RetrievalResult, featurizer: Featurizer, data: TrainingData, out: Path, tmp: Path, preset: Preset
) -> dict[str, Any]:
    ids = featurizer.batch_ids(r.eval_texts)
    export_onnx(r.encoder, torch.from_numpy(ids[:2]), "ids", "embedding", tmp / "query_encoder.onnx")
    fp32 = run_onnx(tmp / "query_encoder.onnx", "query_encoder", "ids", ids)
    gate = quantize_with_gate(
        tmp / "query_encoder.onnx",
        out / "query_encoder.onnx",
        lambda path: float((run_onnx(path, "query_encoder", "ids", ids) * fp32).sum(1).min()),
        PARITY["query_encoder"],
    )
    int8 = run_onnx(out / "query_encoder.onnx", "query_encoder", "ids", ids)
    index = write_index(r.product_vecs, out / "index.usearch")
    products = {
        "ids": [p.id for p in data.catalogue.products],
        "titles": data.titles,
        "categories": data.product_labels.tolist(),
    }
    (out / "products.json").write_text(json.dumps(products, ensure_ascii=False), encoding="utf-8")
    result = evaluate_retrieval(r.eval_targets, r.eval_teacher_vecs, int8, r.product_vecs, index)
    result["retention"] = round(result["student_recall_at_10"] / max(result["teacher_recall_at_10"], 1e-9), 4)
    result["int8_fp32_min_cosine"] = round(float((int8 * fp32).sum(1).min()), 4)
    result["quantization"] = gate
    result["product_teacher"] = r.teacher_name
    result["views"] = preset.methods.views
    result["eval_queries"] = len(r.eval_texts)
    return result


@dataclass
class RelevanceResult:
    head: torch.nn.Module
    train: Pairs
    dev: Pairs
    eval: Pairs
    features: dict[str, Any]
    teacher_eval_probs: np.ndarray | None
    teacher_seconds: float
    teacher: Any = None
    """The cross-encoder teacher's FineTuneResult (model and tokenizer), for agreement checks."""


def _train_relevance(
    data: TrainingData, featurizer: Featurizer, out: Path, r: RetrievalResult, preset: Preset, seed: int
) -> RelevanceResult:
    """Pairs from training products (split into train and dev queries, dev for rule checks) and from
    held-out products (evaluation); a cross-encoder teacher; the tiered student on served features."""
    from training.finetune import cross_encoder_probabilities, finetune_cross_encoder

    labels = data.product_labels.tolist()
    rng = random.Random(seed)
    train_rows = rng.sample(data.train_rows, min(len(data.train_rows), preset.relevance_queries))
    queries = title_substrings(data.titles, labels, train_rows, 1, featurizer, seed + 2)
    heldout = title_substrings(data.titles, labels, data.heldout_rows, 1, featurizer, seed + 3)
    if data.judgements:
        pairs = judged_pairs(data)
        groups = np.random.default_rng(seed).permutation(len(pairs.queries))
        n = len(groups)
        train, dev, ev = (
            pairs.subset(groups[: int(0.7 * n)]),
            pairs.subset(groups[int(0.7 * n) : int(0.8 * n)]),
            pairs.subset(groups[int(0.8 * n) :]),
        )
    else:
        all_train = make_pairs(data, queries, featurizer, seed)
        n_dev = max(1, len(all_train.queries) // 5)
        dev, train = (
            all_train.subset(np.arange(n_dev)),
            all_train.subset(np.arange(n_dev, len(all_train.queries))),
        )
        ev = make_pairs(data, heldout, featurizer, seed + 1)

    # The served int8 models compute the features, exactly as the server will.
    from server.runtime.index import ProductIndex

    index = ProductIndex(out / "index.usearch", preset.methods.views)
    feats = {
        name: pair_features(
            p, featurizer, out / "intent.onnx", out / "query_encoder.onnx", index, data.product_labels, seed
        )
        for name, p in (("train", train), ("dev", dev), ("eval", ev))
    }
    teacher_train = teacher_eval = ce = None
    seconds = 0.0
    if preset.methods.cross_encoder:
        start = time.perf_counter()
        pick = np.random.default_rng(seed).permutation(len(train.titles))[: preset.cross_encoder_pairs]
        q_of = [train.queries[g] for g in train.group]
        ce = finetune_cross_encoder(
            minilm_dir(),
            [q_of[i] for i in pick],
            [train.titles[i] for i in pick],
            train.grades[pick],
            train_top=preset.teacher_train_top,
            epochs=preset.teacher_epochs + 1,
            seed=seed,
        )
        seconds = time.perf_counter() - start
        teacher_train = cross_encoder_probabilities(ce.model, ce.tokenizer, q_of, train.titles)
        teacher_eval = cross_encoder_probabilities(
            ce.model, ce.tokenizer, [ev.queries[g] for g in ev.group], ev.titles
        )
    head = train_relevance_head(feats["train"].model_input, train.grades, teacher_train, preset, seed)
    return RelevanceResult(head, train, dev, ev, feats, teacher_eval, round(seconds, 2), ce)


def _post_features(f: Any, probs: np.ndarray) -> dict[str, np.ndarray]:
    return {
        **f.lexical,
        "cosine": f.model_input[:, 0],
        "category_probability": f.model_input[:, 3],
        "category_match": f.category_match,
        "model_grade": probs.argmax(1).astype(np.float32),
        "model_score": probs @ GRADE_VALUES,
    }


def _served_scores(rules: Rules, f: Any, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and grades as server/service/relevance.py gives them: pre-rules, model, post-rules."""
    n = len(probs)
    pre, _ = apply(rules.relevance_pre, f.lexical, np.ones(n, dtype=bool))
    post, _ = apply(rules.relevance_post, _post_features(f, probs), pre < 0)
    model_grades = probs.argmax(1)
    scores = probs @ GRADE_VALUES
    grades = np.where(post >= 0, post, model_grades)
    scores = clip_to_grade(scores, grades)
    grades = np.where(pre >= 0, pre, grades)
    scores = np.where(pre >= 0, GRADE_VALUES[np.maximum(pre, 0)], scores)
    return scores, grades


def _export_relevance(
    r: RelevanceResult, out: Path, tmp: Path, preset: Preset
) -> tuple[dict[str, Any], Rules]:
    x_eval = r.features["eval"].model_input
    export_onnx(r.head, torch.from_numpy(x_eval[:2]), "features", "probabilities", tmp / "relevance.onnx")
    fp32 = run_onnx(tmp / "relevance.onnx", "relevance", "features", x_eval).argmax(1)
    gate = quantize_with_gate(
        tmp / "relevance.onnx",
        out / "relevance.onnx",
        lambda path: float(np.mean(run_onnx(path, "relevance", "features", x_eval).argmax(1) == fp32)),
        PARITY["relevance"],
    )
    probs = {
        k: run_onnx(out / "relevance.onnx", "relevance", "features", f.model_input)
        for k, f in r.features.items()
    }
    pre: list = []
    post: list = []
    if preset.methods.rules:
        tr, dv = r.features["train"], r.features["dev"]
        pre = mine_pre_rules(tr.lexical, r.train.grades, dv.lexical, r.dev.grades)
        post = mine_post_rules(
            _post_features(tr, probs["train"]), r.train.grades, _post_features(dv, probs["dev"]), r.dev.grades
        )
    rules = Rules({}, tuple(pre), tuple(post))
    ef = r.features["eval"]
    scores, grades = _served_scores(rules, ef, probs["eval"])
    model_only = probs["eval"]
    result: dict[str, Any] = {
        "eval_queries": len(r.eval.queries),
        "eval_pairs": len(r.eval.titles),
        "student": evaluate_ranking(r.eval, scores, grades),
        "student_model_only": evaluate_ranking(r.eval, model_only @ GRADE_VALUES, model_only.argmax(1)),
        "bm25": evaluate_ranking(r.eval, bm25_scores(r.eval)),
        "tiered": preset.methods.tiered_relevance,
        "quantization": gate,
        "pre_rules": rule_report(pre, ef.lexical, r.eval.grades),
        "post_rules": rule_report(post, _post_features(ef, probs["eval"]), r.eval.grades),
    }
    if r.teacher_eval_probs is not None:
        t = r.teacher_eval_probs
        result["teacher_cross_encoder"] = evaluate_ranking(r.eval, t @ GRADE_VALUES, t.argmax(1))
        result["teacher_train_seconds"] = r.teacher_seconds
        result["retention"] = round(
            result["student"]["ndcg_at_10"] / max(result["teacher_cross_encoder"]["ndcg_at_10"], 1e-9), 4
        )
        from training.metrics import spearman

        result["student_teacher_score_spearman"] = round(spearman(scores, t @ GRADE_VALUES), 4)
    return result, rules


def _check_retention(ev: dict[str, Any], preset: Preset, force: bool) -> dict[str, Any]:
    """Refuses students that keep less than min_retention of their teacher (unless forced)."""
    checks = {"intent": ev["intent"].get("retention")}
    if "dev_teacher_accuracy" in ev["intent"] and ev["intent"]["dev_teacher_accuracy"] > 0:
        checks["intent"] = round(
            ev["intent"]["dev_student_int8_accuracy"] / ev["intent"]["dev_teacher_accuracy"], 4
        )
    if "retrieval" in ev:
        checks["retrieval"] = ev["retrieval"]["retention"]
    if "relevance" in ev and "retention" in ev["relevance"]:
        checks["relevance"] = ev["relevance"]["retention"]
    failed = {k: v for k, v in checks.items() if v is not None and v < preset.min_retention}
    if failed and not force:
        raise RetentionError(
            f"students below min_retention {preset.min_retention}: {failed} (pass --force to ship anyway)"
        )
    return {"min_retention": preset.min_retention, "measured": checks, "forced": bool(failed and force)}


def _code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    return f"sift {package_version('sift')} (git {rev})"


def _tensor(name: str, dtype: str, *shape: int | str) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def _write_manifest(
    out: Path,
    preset: Preset,
    data: TrainingData,
    dim: int,
    views: int,
    components: list[str],
    evaluation: dict[str, Any],
    timings: dict[str, float],
    seed: int,
) -> None:
    now = datetime.now(UTC)
    files = {
        f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(out.iterdir())
        if f.name != MANIFEST
    }
    ids = [_tensor("ids", "int64", "batch", "features")]
    teachers = ", ".join(TEACHERS[t] for t in preset.methods.teachers)
    available = {
        "intent": {
            "file": "intent.onnx",
            "description": f"hashed n-gram MLP distilled from {teachers} (BERT2DNN), int8",
            "inputs": ids,
            "outputs": [_tensor("probabilities", "float32", "batch", len(data.labels))],
        },
        "query_encoder": {
            "file": "query_encoder.onnx",
            "description": f"hashed n-gram MLP trained into {TEACHERS[preset.methods.product_teacher]}'s "
            "embedding space (asymmetric two-tower), int8",
            "inputs": ids,
            "outputs": [_tensor("embedding", "float32", "batch", dim)],
        },
        "relevance": {
            "file": "relevance.onnx",
            "description": ("tiered (recall + refine) " if preset.methods.tiered_relevance else "")
            + "MLP over cosine, lexical coverage and intent features, distilled from a cross-encoder",
            "inputs": [_tensor("features", "float32", "batch", len(RELEVANCE_FEATURES))],
            "outputs": [_tensor("probabilities", "float32", "batch", len(GRADES))],
            "feature_names": list(RELEVANCE_FEATURES),
            "grades": list(GRADES),
        },
        "index": {
            "file": "index.usearch",
            "products": "products.json",
            "description": f"usearch HNSW over {TEACHERS[preset.methods.product_teacher]} product embeddings "
            f"({views} view(s) per product), cos, f16",
            "metric": "cos",
            "views": views,
            "count": len(data.titles),
        },
    }
    manifest_components: dict[str, Any] = {name: available[name] for name in components}
    manifest_components["rules"] = {"file": "rules.json", "description": "mined golden and corrective rules"}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_version": f"{preset.name}-{now:%Y%m%dT%H%M%SZ}",
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "code_version": _code_version(),
        "training": {
            "preset": preset.to_json(),
            "seed": seed,
            "data": data.source,
            "teachers": [TEACHERS[t] for t in preset.methods.teachers],
            "stage_seconds": timings,
        },
        "embedding_dim": dim,
        "files": files,
        "featurizer": {
            **FeaturizerConfig(num_buckets=preset.num_buckets).to_json(),
            "tokenizer": "tokenizer.json",
        },
        "labels": [{"id": category_id(path), "path": path} for path in data.labels],
        "components": manifest_components,
        "evaluation": evaluation,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
