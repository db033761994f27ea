"""sift-train report: every method measured against its absence, students against their teachers, on real
held-out queries (a taxonomy-only directory such as ../shared/data/wands-queries) and on the held-out
products of the embedded catalogue (JD protocol). Writes README.md, results.json and PNG plots.

Parts (each rerunnable alone with --parts; results of the others are kept from results.json):
- intent: BM25 floor, zero-shot and fine-tuned teachers, stacking, BERT2DNN students with ablations and a
  temperature sweep, the small transformer student; top-1 (95% bootstrap CI), macro-F1, agreement;
- catalogue: retrieval (two-tower, views, BM25) and relevance (cross-encoder teacher, tiered student,
  rules) on held-out products, and teacher-student agreement on the real query text;
- layers: teacher fine-tuning time against quality (full, frozen bottom, dropped top) and kernel analysis
  of every teacher layer, checked against the fine-tuned results;
- latency: per call at batch 1 on one thread, students (ONNX) against teachers (PyTorch and ONNX).

Parts run only when named (they evaluate shipped bundles through the served code, training nothing):
- real_queries: the default bundle's query side against its teacher on real WANDS and ESCI query text;
- served_relevance: the default bundle's served ScoreRelevance against the relevance teacher it distilled
  (from its kept stage cache), on real query text;
- wands: the WANDS taxonomy bundle on the WANDS test split;
- flipkart: the Flipkart-names bundle on its test split (intent and similar-product search).

And two that train: query_levers, the query student distilled keeping each choice of MiniLM layers, on
real WANDS and ESCI query text; esci, relevance teachers fine-tuned and stacked on the ESCI pairs' train and
dev splits, against BM25 on the test split. And wands_ceiling, which trains nothing: the teachers' own class
signals on WANDS (zero- and few-shot prototypes, BM25), alone and in linear stacks, with the best stack on
the test split as a ceiling.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.report.catalogue import catalogue_part
from training.report.context import PARTS, Context, ReportSettings
from training.report.intent import intent_part
from training.report.latency import latency_part
from training.report.layers import layers_part
from training.report.markdown import write_report
from training.report.query_levers import query_levers_part
from training.report.real_esci import esci_part
from training.report.real_flipkart import flipkart_part
from training.report.real_queries import real_queries_part
from training.report.real_wands import wands_part
from training.report.served_relevance import served_relevance_part
from training.report.wands_ceiling import wands_ceiling_part

log = logging.getLogger("sift.report")
RUN_PART: dict[str, Callable[[Context], dict[str, Any]]] = {
    "intent": intent_part,
    "catalogue": catalogue_part,
    "layers": layers_part,
    "latency": latency_part,
    "real_queries": real_queries_part,
    "served_relevance": served_relevance_part,
    "wands": wands_part,
    "flipkart": flipkart_part,
    "query_levers": query_levers_part,
    "esci": esci_part,
    "wands_ceiling": wands_ceiling_part,
}


def main(argv: list[str]) -> None:
    settings = ReportSettings(_cli_parse_args=argv)
    ctx = Context(settings)
    settings.output.mkdir(parents=True, exist_ok=True)
    path = settings.output / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    for part in settings.parts:
        if part not in PARTS:
            raise SystemExit(f"--parts: unknown part {part!r}; known: {PARTS}")
        start = time.perf_counter()
        log.info("report part %s ...", part)
        results[part] = RUN_PART[part](ctx)
        results[part]["seconds"] = round(time.perf_counter() - start, 1)
        results[part]["command"] = "sift-train report " + shlex.join(argv)
        results["meta"] = {
            "preset": settings.preset,
            "machine": f"{platform.machine()}, {_cpu_model()}, {torch.get_num_threads()} torch threads",
            "python": sys.version.split()[0],
        }
        path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    write_report(results, settings.output)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
