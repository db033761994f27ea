"""`sift-bench models`: each bundle model per call against its teacher, at batch 1 and batch 32.

A call's time includes turning its text into model inputs (Sift's featurizer, or the teacher's tokenizer),
so it is what a serving worker pays. Every runtime gets the same fixed thread count.

- students: the bundle's ONNX int8 files, and their fp32 exports kept beside the bundle (`<bundle>.fp32/`);
- teachers: PyTorch fp32 (transformers) and the same weights exported to ONNX fp32.

Teachers per task: intent, the bundle's intent teachers (stacked ones each timed alone; stacking adds
them up); retrieval, the product-tower teacher on the query; relevance, the cross-encoder's MiniLM body on
query + title pairs (its one-layer head costs nothing beside it). The relevance student's row times the
model on the rows it reads (the four-feature MLP on feature rows; the text student on a query against the
bundle's products), and ScoreRelevance end to end is in `sift-bench load`. Needs the `train` extra (torch,
transformers).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.workload import synthetic_queries

BATCHES = (1, 32)


def _time(fn: Callable[[], object], min_seconds: float) -> dict[str, float]:
    from training.latency import time_per_call

    return time_per_call(fn, warmup=10, repeats=30, min_seconds=min_seconds)


def _batches(texts: list[str], batch: int) -> Callable[[], list[str]]:
    cycle = itertools.cycle(range(0, len(texts) - batch + 1, batch) or [0])
    return lambda: texts[(i := next(cycle)) : i + batch]


def student_rows(bundle: Path, texts: list[str], threads: int, min_seconds: float) -> list[dict[str, Any]]:
    from server.featurize import Featurizer, FeaturizerConfig
    from server.runtime.onnx import OnnxModel, ThreadSettings

    manifest = json.loads((bundle / "manifest.json").read_text())
    featurizer = Featurizer(bundle / "tokenizer.json", FeaturizerConfig.from_json(manifest["featurizer"]))
    fp32_dir = bundle.with_name(bundle.name + ".fp32")
    settings = ThreadSettings(intra_op=threads, inter_op=1)
    rows = []
    components = manifest["components"]
    for task, name in (("intent", "intent"), ("retrieval", "query_encoder"), ("relevance", "relevance")):
        if name not in components:
            continue
        for precision, path in (("int8", bundle / f"{name}.onnx"), ("fp32", fp32_dir / f"{name}.onnx")):
            if not path.is_file():
                rows.append(
                    {
                        "task": task,
                        "model": f"student {name}",
                        "runtime": f"ONNX {precision}",
                        "missing": f"{path} not found (bundles trained before fp32 exports were kept)",
                    }
                )
                continue
            model = OnnxModel(path, f"bench:{name}:{precision}", settings)
            for batch in BATCHES:
                if name == "relevance":
                    inputs = _relevance_inputs(bundle, components[name], featurizer, texts[0], batch)
                    call = lambda m=model, x=inputs: m.run(x)  # noqa: E731
                else:
                    nxt = _batches(texts, batch)
                    call = lambda m=model, nxt=nxt: m.run({"ids": featurizer.batch_ids(nxt())})  # noqa: E731
                rows.append(
                    {
                        "task": task,
                        "model": f"student {name}",
                        "runtime": f"ONNX {precision}",
                        "batch": batch,
                        **_time(call, min_seconds),
                    }
                )
    return rows


def _relevance_inputs(
    bundle: Path, component: dict[str, Any], featurizer: Any, query: str, batch: int
) -> dict[str, np.ndarray]:
    """What the relevance model reads: random feature values for the four-feature MLP; for the text student
    (kinds text_mlp and text_bags), `query` against the bundle's first `batch` products as the server builds
    them."""
    rng = np.random.default_rng(0)
    kind = component.get("kind")
    if kind not in ("text_mlp", "text_bags"):
        return {"features": rng.random((batch, len(component["feature_names"])), dtype=np.float32)}
    from server.bundle import load_bundle
    from server.featurize import (
        RELEVANCE_FEATURES,
        bags_query_input,
        match_block,
        query_grams,
        text_relevance_input,
        title_matches,
    )

    loaded = load_bundle(bundle)
    rows = np.arange(batch) % len(loaded.products)
    features = rng.random((batch, len(RELEVANCE_FEATURES)), dtype=np.float32)
    grams = query_grams(featurizer.words(query), featurizer)
    lexicon = loaded.lexicon.arrays
    if kind == "text_mlp":
        return {
            "features": text_relevance_input(grams, lexicon, rows, features, featurizer.config.num_buckets)
        }
    held = title_matches(grams, lexicon, rows)
    bags = np.concatenate([features, match_block(grams, held), loaded.title_bags[rows]], axis=1)
    return {"query": bags_query_input(grams), "features": bags}


def teacher_rows(
    manifest: dict[str, Any],
    texts: list[str],
    titles: list[str],
    threads: int,
    min_seconds: float,
    cache: Path,
) -> list[dict[str, Any]]:
    import torch

    methods = manifest["training"]["preset"]["methods"]
    components = manifest["components"]
    plan: list[tuple[str, str, list[str]]] = []  # (task, teacher, inputs)
    if "intent" in components:
        plan += [("intent", t, texts) for t in methods["teachers"]]
    if "query_encoder" in components:
        plan.append(("retrieval", methods["product_teacher"], texts))
    if "relevance" in components and methods.get("cross_encoder", True):
        pairs = [f"{q} [SEP] {t}" for q, t in zip(texts, itertools.cycle(titles))]
        plan.append(("relevance", "minilm", pairs))
    rows = []
    torch.set_num_threads(threads)
    for task, name, inputs in plan:
        runtimes = _teacher_runtimes(name, threads, cache)
        label = f"teacher {name}" + (" (cross-encoder body)" if task == "relevance" else "")
        for batch in BATCHES:
            for runtime, encode in runtimes.items():
                nxt = _batches(inputs, batch)
                timing = _time(lambda encode=encode, nxt=nxt: encode(nxt()), min_seconds)
                rows.append({"task": task, "model": label, "runtime": runtime, "batch": batch, **timing})
    return rows


def _teacher_runtimes(name: str, threads: int, cache: Path) -> dict[str, Callable[[list[str]], Any]]:
    """The teacher as PyTorch fp32 and as ONNX fp32: texts -> pooled, normalized embeddings."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from server.runtime.onnx import OnnxModel, ThreadSettings
    from training.onnx_teacher import export_sentence_encoder
    from training.teachers import teacher_dir
    from training.transformer_student import encode_texts, load_tokenizer

    directory = teacher_dir(name)
    hf_tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    onnx_path = cache / f"{name}_fp32.onnx"
    if not onnx_path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        export_sentence_encoder(directory, onnx_path)
    onnx_model = OnnxModel(onnx_path, f"bench:{name}", ThreadSettings(intra_op=threads, inter_op=1))
    tok = load_tokenizer(directory)

    @torch.inference_mode()
    def with_torch(batch: list[str]) -> torch.Tensor:
        enc = hf_tok(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    def with_onnx(batch: list[str]) -> np.ndarray:
        ids, mask = encode_texts(tok, batch)
        return onnx_model.run({"input_ids": ids, "attention_mask": mask})

    return {"PyTorch fp32": with_torch, "ONNX fp32": with_onnx}


def index_recall(bundle_dir: Path, texts: list[str], k: int = 10) -> dict[str, Any] | None:
    """Recall@k of the served ANN search against exact search over the same product vectors, for queries
    embedded by the bundle's own query encoder: what the approximation costs."""
    from server.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    if bundle.index is None or bundle.query_encoder is None:
        return None
    all_rows = np.arange(len(bundle.products.ids), dtype=np.int64)
    hits = []
    for text in texts:
        vector = bundle.query_encoder.run({"ids": bundle.featurizer.batch_ids([text])})[0]
        approx, _ = bundle.index.search(vector, k)
        exact, _ = bundle.index.exact_search(vector, all_rows, k)
        hits.append(len(set(approx.tolist()) & set(exact.tolist())) / k)
    return {
        "k": k,
        "queries": len(texts),
        "products": len(all_rows),
        "views": bundle.index.views,
        "recall": round(float(np.mean(hits)), 4),
        "min_recall": round(float(np.min(hits)), 4),
    }


def run_models(bundle: Path, threads: int, min_seconds: float, cache: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    texts, titles = synthetic_queries(2000, seed=1)
    recall = index_recall(bundle, texts[:1000])
    rows = student_rows(bundle, texts, threads, min_seconds)
    rows += teacher_rows(manifest, texts, titles, threads, min_seconds, cache)
    for row in rows:
        if "median_ms" not in row:
            continue
        row["per_item_ms"] = row["median_ms"] / row["batch"]
        student = next(
            (
                r
                for r in rows
                if r["task"] == row["task"]
                and r["runtime"] == "ONNX int8"
                and r.get("batch") == row["batch"]
                and "median_ms" in r
            ),
            None,
        )
        if student:
            row["x_student_int8"] = round(row["median_ms"] / student["median_ms"], 1)
    return {
        "bundle_version": manifest["bundle_version"],
        "threads": threads,
        "batches": list(BATCHES),
        "rows": rows,
        "index_recall": recall,
    }


def models_markdown(result: dict[str, Any], head: list[str]) -> str:
    lines = [
        *head,
        f"Per call, {result['threads']} thread(s) for every runtime, featurization or tokenization included; "
        "median and p90 of at least 30 timed calls after 10 untimed. `x student` is how many times the "
        "student int8's time for the same task and batch this row takes.",
        "",
        "| task | model | runtime | batch | median ms | p90 ms | ms per item | x student int8 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "median_ms" not in r:
            lines.append(f"| {r['task']} | {r['model']} | {r['runtime']} | - | {r['missing']} | | | |")
            continue
        lines.append(
            f"| {r['task']} | {r['model']} | {r['runtime']} | {r['batch']} | {r['median_ms']:.3f} "
            f"| {r['p90_ms']:.3f} | {r['per_item_ms']:.4f} | {r.get('x_student_int8', '-')} |"
        )
    recall = result.get("index_recall")
    if recall:
        lines += [
            "",
            f"ANN index: recall@{recall['k']} of the served usearch search against exact search over the "
            f"same vectors, {recall['queries']} queries embedded by the bundle's query encoder, "
            f"{recall['products']:,} products x {recall['views']} views: "
            f"**{recall['recall']:.4f}** (worst query {recall['min_recall']:.1f}).",
        ]
    return "\n".join([*lines, "", "![speed-ups](speedup.png)", ""])


def models_plot(result: dict[str, Any], directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "median_ms" in r]
    fig, axes = plt.subplots(1, len(BATCHES), figsize=(11, 5), sharey=True)
    for ax, batch in zip(np.atleast_1d(axes), BATCHES, strict=True):
        sel = [r for r in rows if r["batch"] == batch]
        labels = [
            f"{r['task']}: {r['model'].removeprefix('teacher ').removeprefix('student ')}, {r['runtime']}"
            for r in sel
        ]
        ax.barh(
            labels,
            [r["median_ms"] for r in sel],
            color=["tab:blue" if "student" in r["model"] else "tab:orange" for r in sel],
        )
        ax.set_xscale("log")
        ax.set_xlabel("ms per call (median, log)")
        ax.set_title(f"batch {batch}")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(directory / "speedup.png", dpi=110)
    plt.close(fig)
