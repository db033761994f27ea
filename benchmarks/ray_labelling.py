"""Ray labelling throughput: texts/s of teacher labelling (the soft labels of BERT2DNN's unlabelled
distillation set) on Ray Data actors at 1 and 2 CPUs, against the single-process path at 1 and 2 torch
threads, in the same run.

    sift-bench ray-labelling --texts 2000 --cpus 1,2 --repeats 3

The teacher is MiniLM with a cosine classification head over the embedded taxonomy's leaves: the shape of
the fine-tuned intent teacher (its weights do not change the cost). The texts are query-like spans of the
embedded catalogue's titles. Single process: `classifier_logits` with torch.set_num_threads(N). Ray: one
local Ray instance with as many CPUs as the largest setting, and `LabelEngine("ray", cpus=N)`: N actors of
one CPU and one thread each. A Ray call is timed end to end, so it includes starting the actor pool (a
fresh Python per actor importing torch and transformers and loading the teacher) and shipping the
weights; the time to its first answered batch is reported apart, and so is the rate after it. Settings
run in turn within each repeat (so machine noise falls on all of them); figures are medians of the
repeats with (min-max). Needs the `train` extra and `pip install 'ray[data]'`.

Writes results.json (every raw figure) and README.md into --output (default
benchmarks/results/ray-labelling).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report

RESULTS = Path("benchmarks/results/ray-labelling")
PACKAGES = ("torch", "transformers", "ray", "pyarrow")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def teacher(num_classes: int) -> tuple[Any, Any]:
    import torch

    from training.finetune import EncoderClassifier, load_encoder
    from training.teachers import minilm_dir

    torch.manual_seed(0)
    tokenizer, encoder = load_encoder(minilm_dir())
    return EncoderClassifier(encoder, num_classes).eval(), tokenizer


def run(num_texts: int, cpus: list[int], repeats: int, seed: int = 0) -> dict[str, Any]:
    import ray
    import torch

    from benchmarks.workload import synthetic_queries
    from training.data.synthetic import TAXONOMY
    from training.finetune import classifier_logits
    from training.scale import ACTOR_ENV, LabelEngine

    load_average = round(os.getloadavg()[0], 2)
    texts, _ = synthetic_queries(num_texts, seed=seed)
    model, tokenizer = teacher(len(TAXONOMY))
    default_threads = torch.get_num_threads()
    start = time.perf_counter()
    ray.init(num_cpus=max(cpus), include_dashboard=False, runtime_env={"env_vars": dict(ACTOR_ENV)})
    ray_init_seconds = time.perf_counter() - start
    runs: dict[str, list[dict[str, float]]] = {}
    reference = None
    try:
        classifier_logits(model, tokenizer, texts[:256])  # warm-up of the single-process path
        for r in range(repeats):
            for n in cpus:
                torch.set_num_threads(n)
                start = time.perf_counter()
                local = classifier_logits(model, tokenizer, texts)
                seconds = time.perf_counter() - start
                runs.setdefault(f"single/{n}", []).append({"seconds": seconds})
                reference = local if reference is None else reference
                print(
                    f"repeat {r + 1}: single process, {n} thread(s): {len(texts) / seconds:.0f} texts/s",
                    file=sys.stderr,
                )
            torch.set_num_threads(default_threads)
            for n in cpus:
                engine = LabelEngine("ray", cpus=n)
                start = time.perf_counter()
                labels = engine.classifier_logits("minilm", model, tokenizer, texts)
                seconds = time.perf_counter() - start
                same = bool(np.allclose(labels, reference, rtol=1e-5, atol=1e-5))
                runs.setdefault(f"ray/{n}", []).append(
                    {
                        "seconds": seconds,
                        "first_batch_seconds": engine.last_run["first_batch_seconds"],
                        "matches_single_process": same,
                    }
                )
                print(f"repeat {r + 1}: ray, {n} CPU(s): {len(texts) / seconds:.0f} texts/s", file=sys.stderr)
    finally:
        torch.set_num_threads(default_threads)
        ray.shutdown()
    rows = []
    for key, measured in runs.items():
        engine_name, n = key.split("/")
        rate = [len(texts) / m["seconds"] for m in measured]
        row: dict[str, Any] = {
            "engine": "ray" if engine_name == "ray" else "single process",
            "cpus": int(n),
            "texts_per_second": _stat(rate),
            "seconds": _stat([m["seconds"] for m in measured]),
        }
        if engine_name == "ray":
            first = [m["first_batch_seconds"] for m in measured]
            after = [
                (len(texts) - 256) / max(m["seconds"] - m["first_batch_seconds"], 1e-9) for m in measured
            ]
            row["first_batch_seconds"] = _stat(first)
            row["texts_per_second_after_first_batch"] = _stat(after)
            row["matches_single_process"] = all(m["matches_single_process"] for m in measured)
        rows.append(row)
    return {
        "texts": len(texts),
        "text_chars_mean": round(float(np.mean([len(t) for t in texts])), 1),
        "classes": len(TAXONOMY),
        "batch_size": 256,
        "repeats": repeats,
        "cpus": cpus,
        "ray_init_seconds": round(ray_init_seconds, 2),
        "load_average": load_average,
        "rows": rows,
        "raw": runs,
    }


def _stat(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def _cell(stat: dict[str, float], digits: int = 0) -> str:
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def markdown(result: dict[str, Any]) -> str:
    lines = report.header(result, "Ray labelling throughput")
    lines += [
        f"Teacher labelling of {result['texts']:,} query-like texts (mean {result['text_chars_mean']} "
        f"characters) by a MiniLM classifier teacher with {result['classes']} classes, batches of "
        f"{result['batch_size']}; {result['repeats']} repeats, settings in turn within each; median "
        "(min-max). Ray figures are end to end per call: they include starting the actor pool (one fresh "
        "process per actor importing torch and transformers and loading the teacher) and shipping the "
        "weights through the object store; the rate after the first answered batch leaves most of that out. "
        f"Starting the local Ray instance itself took {result['ray_init_seconds']} s (once per run). "
        "The machine is shared: compare settings within one run"
        + (f" (load average {result['load_average']} at its start)." if "load_average" in result else "."),
        "",
        "| engine | CPUs | texts/s | seconds per call | seconds to first batch | texts/s after first batch "
        "| same labels as single process |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        ray_only = "first_batch_seconds" in row
        lines.append(
            f"| {row['engine']} | {row['cpus']} | {_cell(row['texts_per_second'])} "
            f"| {_cell(row['seconds'], 1)} "
            f"| {_cell(row['first_batch_seconds'], 1) if ray_only else '-'} "
            f"| {_cell(row['texts_per_second_after_first_batch']) if ray_only else '-'} "
            f"| {row.get('matches_single_process', '-')} |"
        )
    by = {(r["engine"], r["cpus"]): r["texts_per_second"]["median"] for r in result["rows"]}
    lines.append("")
    for n in result["cpus"]:
        if ("ray", n) in by and ("single process", n) in by:
            lines.append(
                f"- {n} CPU(s): Ray / single process = {by[('ray', n)] / by[('single process', n)]:.2f}x"
            )
    low, high = min(result["cpus"]), max(result["cpus"])
    if low != high:
        for engine in ("single process", "ray"):
            if (engine, low) in by and (engine, high) in by:
                lines.append(
                    f"- {engine}: {high} / {low} CPUs = {by[(engine, high)] / by[(engine, low)]:.2f}x"
                )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sift-bench ray-labelling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--texts", type=int, default=2000, help="texts labelled per call")
    parser.add_argument("--cpus", type=_ints, default=[1, 2], help="CPU settings: Ray actors, torch threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    measured = run(args.texts, args.cpus, args.repeats, args.seed)
    env = report.environment()
    env["command"] = shlex.join(["python", "-m", "benchmarks.ray_labelling", *sys.argv[1:]])
    for name in PACKAGES:
        try:
            env["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    result = {"environment": env} | measured
    text = markdown(result)
    report.write_results(args.output, result, text)
    print(text, file=sys.stderr)


if __name__ == "__main__":
    main()
