"""Intent: the distillation sets, the teachers (zero-shot label prototypes, then fine-tuned), teacher
stacking, and the BERT2DNN feed-forward student; then its gated int8 export and its evaluation."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.featurize import Featurizer
from training.calibration import expected_calibration_error, fit_temperature, softmax
from training.data.augment import augment_queries, generate_label_queries, vocabulary_queries
from training.data.dataset import TrainingData
from training.data.queries import title_substrings
from training.export import export_onnx, run_onnx
from training.finetune import classifier_logits, finetune_classifier
from training.gate import PARITY, Paired
from training.metrics import accuracy, macro_f1
from training.onnx_teacher import quantize_with_gate
from training.presets import Preset
from training.scale import LabelEngine
from training.students import IntentStudent, distillation_loss, fit, take
from training.teachers import SentenceTeacher, minilm_dir, teacher_dir

PROTOTYPE_SCALE = 20.0
"""Zero-shot logits are this times the cosine to a label prototype (a softmax over cosines is too flat)."""


@dataclass
class IntentSets:
    texts: list[str]
    """The distillation set: every text the student learns the teachers' answers on."""
    hard: np.ndarray
    """Known label per text (catalogue, generated or real labelled query), -1 where unlabelled."""
    eval_texts: list[str]
    eval_labels: np.ndarray
    dev_texts: list[str]
    dev_labels: np.ndarray
    eval_name: str
    sources: dict[str, int] = field(default_factory=dict)


def build_intent_sets(data: TrainingData, preset: Preset, featurizer: Featurizer, seed: int) -> IntentSets:
    m = preset.methods
    texts: list[str] = []
    hard: list[int] = []
    sources: dict[str, int] = {}

    def add(name: str, new_texts: list[str], labels: list[int]) -> None:
        texts.extend(new_texts)
        hard.extend(labels)
        sources[name] = len(new_texts)

    real_texts, real_labels = data.real("train")
    add("real_train_queries", real_texts, real_labels.tolist())
    if m.substrings and data.catalogue is not None:
        qs = title_substrings(
            data.titles,
            data.product_labels.tolist(),
            data.train_rows,
            preset.queries_per_product,
            featurizer,
            seed,
        )
        add("title_substrings", [q.text for q in qs], [q.category for q in qs])
    if m.label_queries:
        generated = generate_label_queries(
            data.labels, data.descriptions, preset.label_queries_per_label * len(data.labels), seed
        )
        add("label_queries", [t for t, _ in generated], [data.label_of(label) for _, label in generated])
    if m.augmentation and real_texts:
        augmented = augment_queries(real_texts, 20 * len(real_texts), seed)
        add("augmented_real_queries", augmented, [-1] * len(augmented))
    if m.vocabulary:
        vocab = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").split()
        n = preset.vocabulary_queries
        words = vocabulary_queries(vocab, data.labels, data.descriptions, n, seed)
        add("vocabulary_queries", words, [-1] * len(words))
    if not texts:
        raise ValueError("no intent training texts: enable a source (substrings, label_queries) or add data")

    dev_texts, dev_labels = data.real("dev")
    eval_texts, eval_labels = data.real("test")
    eval_name = "real test split"
    if not eval_texts and data.catalogue is not None:
        # JD protocol: substrings of held-out products' titles, labelled with their category.
        held = title_substrings(
            data.titles, data.product_labels.tolist(), data.heldout_rows, 3, featurizer, seed + 1
        )
        held = [q for q in held if q.category >= 0]
        random.Random(seed).shuffle(held)
        half = len(held) // 2
        eval_texts, eval_labels = [q.text for q in held[half:]], np.array([q.category for q in held[half:]])
        if not dev_texts:
            dev_texts, dev_labels = [q.text for q in held[:half]], np.array([q.category for q in held[:half]])
        eval_name = "held-out products' title substrings"
    return IntentSets(
        texts,
        np.array(hard, dtype=np.int64),
        eval_texts,
        eval_labels,
        dev_texts,
        dev_labels,
        eval_name,
        sources,
    )


@dataclass
class IntentTeacher:
    """One teacher's answers (logits) on every text the run needs, and what it cost."""

    name: str
    train_logits: np.ndarray
    dev_logits: np.ndarray
    eval_logits: np.ndarray
    num_parameters: int
    train_seconds: float
    zero_shot_eval_logits: np.ndarray
    model: torch.nn.Module | None = None
    tokenizer: object | None = None
    choice: dict[str, Any] = field(default_factory=dict)
    """Which candidate labels the distillation set, and every candidate's dev accuracy."""


def label_prompts(labels: list[str], descriptions: dict[str, str]) -> list[list[str]]:
    """Texts that stand for each label: its leaf name, its path, and its description where there is one."""
    prompts = []
    for label in labels:
        leaf = label.split(" > ")[-1]
        texts = [leaf, label.replace(" > ", " ")]
        if descriptions.get(label):
            texts.append(descriptions[label])
        prompts.append(texts)
    return prompts


def label_prototypes(encoder: SentenceTeacher, labels: list[str], descriptions: dict[str, str]) -> np.ndarray:
    prompts = label_prompts(labels, descriptions)
    flat = [t for texts in prompts for t in texts]
    vecs = encoder.encode(flat, desc="teacher: label prototypes")
    out, start = np.empty((len(labels), vecs.shape[1]), dtype=np.float32), 0
    for i, texts in enumerate(prompts):
        mean = vecs[start : start + len(texts)].mean(0)
        out[i] = mean / np.linalg.norm(mean)
        start += len(texts)
    return out


def few_shot_prototypes(
    encoder: SentenceTeacher, prototypes: np.ndarray, texts: list[str], labels: np.ndarray
) -> np.ndarray | None:
    """Label prototypes moved toward the labelled real queries of their class (the mean of the prototype
    and of those queries' vectors), or None without labelled real queries. Few real queries per class (WANDS:
    192 for 188 classes) are too few to fine-tune on, but enough to say how shoppers word a class."""
    known = labels >= 0
    if not known.any():
        return None
    vecs = encoder.encode([t for t, k in zip(texts, known, strict=True) if k], desc="teacher: few-shot")
    return shot_prototypes(prototypes, vecs, labels[known])


def shot_prototypes(prototypes: np.ndarray, vecs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`few_shot_prototypes` from the labelled queries' vectors (`labels` >= 0, one per row of `vecs`):
    each label with queries gets the normalized sum of its prototype and their mean vector; the rest keep
    theirs."""
    out = prototypes.copy()
    for label in np.unique(labels):
        mean = prototypes[label] + vecs[labels == label].mean(0)
        out[label] = mean / np.linalg.norm(mean)
    return out


def train_intent_teacher(
    name: str,
    data: TrainingData,
    sets: IntentSets,
    preset: Preset,
    seed: int,
    engine: LabelEngine | None = None,
) -> IntentTeacher:
    """Candidates: zero-shot from label prototypes, few-shot prototypes (moved toward the labelled real
    training queries) and, unless switched off, the model fine-tuned on the labelled texts with the head
    initialised from the prototypes and the bottom layers frozen. The one with the best dev accuracy labels
    the distillation set (a tie goes to the later in that order): on a few real queries fine-tuning can
    lose to the prototypes, and dev says so. `engine` labels the distillation set (`sets.texts`, the big
    one): in this process by default, or on Ray (training/scale.py)."""
    bulk = engine or LabelEngine()
    model_dir = teacher_dir(name)
    encoder = SentenceTeacher(model_dir)
    prototypes = label_prototypes(encoder, data.labels, data.descriptions)
    candidates = {"zero-shot": prototypes}
    shots = few_shot_prototypes(encoder, prototypes, *data.real("train"))
    if shots is not None:
        candidates["few-shot"] = shots

    def encode(texts: list[str], on: LabelEngine | None = None) -> np.ndarray:
        desc = f"{name}: prototypes"
        return on.encode(name, texts, local=encoder, desc=desc) if on else encoder.encode(texts, desc=desc)

    dev_known = sets.dev_labels >= 0
    dev_vecs, eval_vecs = (
        encode(t) if t else np.zeros((0, prototypes.shape[1]), np.float32)
        for t in (sets.dev_texts, sets.eval_texts)
    )
    zero_eval = PROTOTYPE_SCALE * eval_vecs @ prototypes.T

    def dev_accuracy(dev_logits: np.ndarray) -> float:
        if not dev_known.any():
            return float("nan")
        return accuracy(dev_logits.argmax(1)[dev_known], sets.dev_labels[dev_known])

    scores = {kind: dev_accuracy(PROTOTYPE_SCALE * dev_vecs @ p.T) for kind, p in candidates.items()}
    result = None
    seconds = 0.0
    if preset.methods.teacher_finetune:
        labelled = np.flatnonzero(sets.hard >= 0)
        rng = np.random.default_rng(seed)
        if len(labelled) > preset.teacher_max_texts:
            labelled = np.sort(rng.choice(labelled, preset.teacher_max_texts, replace=False))
        start = time.perf_counter()
        result = finetune_classifier(
            model_dir,
            [sets.texts[i] for i in labelled],
            sets.hard[labelled],
            len(data.labels),
            init_head=prototypes,
            train_top=preset.teacher_train_top,
            epochs=preset.teacher_epochs,
            seed=seed,
            desc=f"{name}: fine-tune",
        )
        seconds = time.perf_counter() - start
        scores["fine-tuned"] = dev_accuracy(classifier_logits(result.model, result.tokenizer, sets.dev_texts))
    order = list(scores)
    chosen = max(order, key=lambda k: (np.nan_to_num(scores[k], nan=-1.0), order.index(k)))
    choice = {"chosen": chosen, "dev_accuracy": {k: round(v, 4) for k, v in scores.items()}}
    if chosen != "fine-tuned" or result is None:
        protos = candidates[chosen]

        def logits(texts: list[str], on: LabelEngine | None = None) -> np.ndarray:
            if not texts:
                return np.zeros((0, len(data.labels)), dtype=np.float32)
            return PROTOTYPE_SCALE * encode(texts, on) @ protos.T

        return IntentTeacher(
            name,
            logits(sets.texts, bulk),
            PROTOTYPE_SCALE * dev_vecs @ protos.T,
            PROTOTYPE_SCALE * eval_vecs @ protos.T,
            encoder.num_parameters,
            round(seconds, 2),
            zero_eval,
            choice=choice,
        )
    model, tokenizer = result.model, result.tokenizer

    def tuned(texts: list[str], on: LabelEngine | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(data.labels)), dtype=np.float32)
        if on is not None:
            return on.classifier_logits(name, model, tokenizer, texts)
        return classifier_logits(model, tokenizer, texts)

    return IntentTeacher(
        name,
        tuned(sets.texts, bulk),
        tuned(sets.dev_texts),
        tuned(sets.eval_texts),
        result.total_parameters,
        round(seconds, 2),
        zero_eval,
        model,
        tokenizer,
        choice=choice,
    )


def stack_logits(logits: list[np.ndarray], temperature: float) -> np.ndarray:
    """Teacher stacking: the average of the teachers' temperature-softened distributions, returned as logits
    that give back exactly that average when softened at the same temperature."""
    if len(logits) == 1:
        return logits[0]
    probs = np.mean([_softmax(z / temperature) for z in logits], axis=0)
    return (temperature * np.log(np.clip(probs, 1e-12, None))).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def train_intent_student(
    sets: IntentSets,
    teacher_logits: np.ndarray,
    featurizer: Featurizer,
    num_labels: int,
    preset: Preset,
    seed: int,
    temperature: float | None = None,
) -> tuple[IntentStudent, list[float]]:
    """BERT2DNN: the hashed n-gram MLP learns the teachers' softened answers on the whole distillation set,
    plus the hard label where a text has one. Without soft labels it sees only the labelled texts."""
    temperature = temperature or preset.temperature
    rows = np.arange(len(sets.texts))
    if not preset.methods.soft_labels:
        rows = np.flatnonzero(sets.hard >= 0)
    ids = featurizer.batch_ids([sets.texts[i] for i in rows])
    soft = torch.from_numpy(teacher_logits[rows].astype(np.float32))
    hard = torch.from_numpy(sets.hard[rows])
    student = IntentStudent(preset.num_buckets, preset.intent_dim, preset.intent_hidden, num_labels)

    def loss(idx: np.ndarray) -> torch.Tensor:
        logits = student.logits(take(ids, idx))
        if not preset.methods.soft_labels:
            return F.cross_entropy(logits, hard[idx])
        return distillation_loss(logits, soft[idx], hard[idx], temperature, preset.soft_weight)

    history = fit(
        student, len(rows), loss, preset.epochs, preset.batch_size, preset.learning_rate, seed, "intent"
    )
    return student, history


def student_logits(student: IntentStudent, featurizer: Featurizer, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, student.mlp[-1].out_features), dtype=np.float32)
    with torch.no_grad():
        return student.logits(torch.from_numpy(featurizer.batch_ids(texts))).numpy()


def calibrate_intent(student: IntentStudent, featurizer: Featurizer, sets: IntentSets) -> dict[str, Any]:
    """Fits the student's temperature on the dev split (set inside the student, so it is exported) and
    reports the expected calibration error on the evaluation split before and after."""
    student.temperature.fill_(1.0)
    temperature = fit_temperature(student_logits(student, featurizer, sets.dev_texts), sets.dev_labels)
    eval_logits = student_logits(student, featurizer, sets.eval_texts)
    student.temperature.fill_(temperature)
    known = sets.eval_labels >= 0
    calibrated = softmax(eval_logits, temperature)
    return {
        "method": "temperature scaling, fitted on dev (NLL)",
        "temperature": round(temperature, 4),
        "dev_queries": int((sets.dev_labels >= 0).sum()),
        "eval_ece_before": round(expected_calibration_error(softmax(eval_logits), sets.eval_labels), 4),
        "eval_ece_after": round(expected_calibration_error(calibrated, sets.eval_labels), 4),
        "eval_mean_top_probability_known": round(float(calibrated[known].max(1).mean()), 4)
        if known.any()
        else None,
        "eval_mean_top_probability_unknown": round(float(calibrated[~known].max(1).mean()), 4)
        if (~known).any()
        else None,
    }


def answers_only(teacher: IntentTeacher) -> IntentTeacher:
    """The teacher without its model and tokenizer: what the pipeline keeps (and caches) of it."""
    return replace(teacher, model=None, tokenizer=None)


def export_intent(
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


def evaluate_intent(
    teachers: list[IntentTeacher],
    student: torch.nn.Module,
    sets: IntentSets,
    featurizer: Featurizer,
    out: Path,
    tmp: Path,
    preset: Preset,
    history: list[float],
    gate_items: Paired,
) -> dict[str, Any]:
    """The evaluation split's figures for teachers and the served student; the dev figures come from the
    retention gate's items (`intent_paired`), so dev is scored once."""
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
        result[f"teacher_{t.name}_choice"] = t.choice
    result["teacher_accuracy"] = round(accuracy(teacher_pred[known], gold), 4)
    result["teacher_macro_f1"] = round(macro_f1(teacher_pred[known], gold), 4)
    result["student_int8_accuracy"] = round(accuracy(student_pred[known], gold), 4)
    result["student_int8_macro_f1"] = round(macro_f1(student_pred[known], gold), 4)
    result["student_teacher_top1_agreement"] = round(float(np.mean(student_pred == teacher_pred)), 4)
    result["retention"] = round(result["student_int8_accuracy"] / max(result["teacher_accuracy"], 1e-9), 4)
    if sets.dev_texts:  # then the gate's items are the dev split's labelled queries (intent_paired)
        for name, correct in (("teacher", gate_items.teacher), ("student_int8", gate_items.student)):
            result[f"dev_{name}_accuracy"] = (
                round(float(np.mean(correct)), 4) if len(correct) else float("nan")
            )
    if (~known).any():
        # Queries of no known class should get low confidence.
        result["unknown_class_mean_top_probability"] = round(float(student_probs[~known].max(1).mean()), 4)
        result["known_class_mean_top_probability"] = round(float(student_probs[known].max(1).mean()), 4)
    result["student_loss_by_epoch"] = [round(x, 4) for x in history]
    return result


def intent_paired(
    teachers: list[IntentTeacher], sets: IntentSets, featurizer: Featurizer, out: Path, preset: Preset
) -> Paired:
    """Per-query top-1 correctness of the served int8 student and the (stacked) teachers, for the gate: on
    the dev split when there is one (the test split stays unseen by every decision), else on eval."""
    if sets.dev_texts:
        texts, gold, logits = sets.dev_texts, sets.dev_labels, [t.dev_logits for t in teachers]
    else:
        texts, gold, logits = sets.eval_texts, sets.eval_labels, [t.eval_logits for t in teachers]
    known = gold >= 0
    student = run_onnx(out / "intent.onnx", "intent", "ids", featurizer.batch_ids(texts)).argmax(1)
    teacher = stack_logits(logits, preset.temperature).argmax(1)
    return Paired(
        "top-1 accuracy", (student == gold)[known].astype(float), (teacher == gold)[known].astype(float)
    )
