"""The bundle's manifest.json: what each file holds, how its models are called, and how they were trained
and evaluated. server/bundle.py validates what this writes."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from server.bundle import MANIFEST, SCHEMA_VERSION, category_id, sha256_file
from server.featurize import RELEVANCE_FEATURES, FeaturizerConfig
from server.rules import GRADES
from training.data.dataset import TrainingData
from training.presets import Preset
from training.teachers import TEACHERS


def code_version() -> str:
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


def tensor(name: str, dtype: str, *shape: int | str) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def write_manifest(
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
    ids = [tensor("ids", "int64", "batch", "features")]
    teachers = ", ".join(TEACHERS[t] for t in preset.methods.teachers)
    available = {
        "intent": {
            "file": "intent.onnx",
            "description": f"hashed n-gram MLP distilled from {teachers} (BERT2DNN), int8",
            "inputs": ids,
            "outputs": [tensor("probabilities", "float32", "batch", len(data.labels))],
        },
        "query_encoder": {
            "file": "query_encoder.onnx",
            "description": f"hashed n-gram MLP trained into {TEACHERS[preset.methods.product_teacher]}'s "
            "embedding space (asymmetric two-tower), int8",
            "inputs": ids,
            "outputs": [tensor("embedding", "float32", "batch", dim)],
        },
        "relevance": {
            "file": "relevance.onnx",
            "description": ("tiered (recall + refine) " if preset.methods.tiered_relevance else "")
            + "MLP over cosine, lexical coverage and intent features, distilled from a cross-encoder",
            "inputs": [tensor("features", "float32", "batch", len(RELEVANCE_FEATURES))],
            "outputs": [tensor("probabilities", "float32", "batch", len(GRADES))],
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
        "code_version": code_version(),
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
