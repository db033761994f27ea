"""The bundle's manifest.json, built with the server's own manifest types (server/manifest.py): what each
file holds, how its models are called, and how they were trained and evaluated. Manifest.write checks the
result as the server will read it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from server.featurize import (
    RELEVANCE_FEATURES,
    TEXT_BAGS_FEATURES,
    TEXT_QUERY_IDS,
    TEXT_RELEVANCE_FEATURES,
    TEXT_RELEVANCE_WIDTH,
    FeaturizerConfig,
)
from server.manifest import (
    ArraySpec,
    Components,
    FeaturizerSection,
    IndexComponent,
    Label,
    LexicalComponent,
    Manifest,
    ModelComponent,
    RulesComponent,
    files_of,
    tensor,
)
from training.data.dataset import TrainingData
from training.presets import Preset
from training.relevance_bags import TITLE_MODEL, BagsExport
from training.static_student import FILE as STATIC_FILE
from training.static_student import KIND as STATIC_KIND
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
    *,
    query_student: dict[str, Any] | None = None,
    query_static: dict[str, Any] | None = None,
    lexical: LexicalComponent | None = None,
    arrays: dict[str, ArraySpec] | None = None,
    bags: BagsExport | None = None,
    relevance_query_vector: str = "query_encoder",
) -> None:
    """`query_student` is the transformer student's export record (layers, max_tokens), when it ships, and
    `query_static` the static word-piece model's (training/static_student.py);
    `arrays` the product arrays (server/catalogue.py save_product_arrays); `bags` the text relevance
    student's two-graph export (training/relevance_bags.py); `relevance_query_vector` the query model whose
    vector the relevance student's cosine feature was trained on (RelevanceResult.cosine)."""
    now = datetime.now(UTC)
    ids = (tensor("ids", "int64", "batch", "features"),)
    teachers = ", ".join(TEACHERS[t] for t in preset.methods.teachers)
    product_teacher = TEACHERS[preset.methods.product_teacher]
    available: dict[str, Any] = {
        "intent": ModelComponent(
            "intent.onnx",
            f"hashed n-gram MLP distilled from {teachers} (BERT2DNN), calibrated, int8",
            ids,
            (tensor("probabilities", "float32", "batch", len(data.labels)),),
        ),
        "query_encoder": ModelComponent(
            "query_encoder.onnx",
            f"hashed n-gram MLP trained into {product_teacher}'s embedding space (asymmetric two-tower), int8"
            + ("; embeds relevance candidates' titles" if query_student else ""),
            ids,
            (tensor("embedding", "float32", "batch", dim),),
        ),
        "relevance": replace(
            _relevance_component(preset, data.grades, bags),
            query_vector=None if relevance_query_vector == "query_encoder" else relevance_query_vector,
        ),
        "index": IndexComponent(
            "index.usearch",
            None,
            f"usearch HNSW over {product_teacher} product embeddings ({views} view(s) per product), cos, f16",
            views=views,
            count=len(data.titles),
            arrays=arrays,
        ),
    }
    if query_student is not None:
        available["query_student"] = ModelComponent(
            "query_student.onnx",
            f"transformer: all-MiniLM-L6-v2's bottom {query_student['layers']} layers (layer dropping), "
            f"distilled into {product_teacher}'s space; serves Search and EmbedQuery, "
            f"{query_student['method']}",
            (tensor("input_ids", "int64", "batch", "tokens"),),
            (tensor("embedding", "float32", "batch", dim),),
            kind="transformer",
            max_tokens=query_student["max_tokens"],
        )
        components = [*components, "query_student"]
    if query_static is not None:
        available["query_static"] = ModelComponent(
            STATIC_FILE,
            f"static word pieces: all-MiniLM-L6-v2's embedding of each of its {query_static['rows']:,} word "
            f"pieces alone, tuned into {product_teacher}'s space; the relevance cosine's query vector, "
            f"{query_static['method']}",
            (tensor("input_ids", "int64", "batch", "tokens"),),
            (tensor("embedding", "float32", "batch", dim),),
            kind=STATIC_KIND,
            max_tokens=query_static["max_tokens"],
        )
        components = [*components, "query_static"]
    if lexical is not None:
        available["lexical"] = lexical
        components = [*components, "lexical"]
    manifest = Manifest(
        bundle_version=f"{preset.name}-{now:%Y%m%dT%H%M%SZ}",
        created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        code_version=code_version(),
        training={
            "preset": preset.to_json(),
            "seed": seed,
            "data": data.source,
            "teachers": [TEACHERS[t] for t in preset.methods.teachers],
            "stage_seconds": timings,
        },
        embedding_dim=dim,
        files=files_of(out),
        featurizer=FeaturizerSection(
            FeaturizerConfig(num_buckets=preset.num_buckets).to_json(), "tokenizer.json"
        ),
        labels=tuple(Label.of(path) for path in data.labels),
        components=Components(
            rules=RulesComponent("rules.json", "mined golden and corrective rules"),
            **{name: available[name] for name in components},
        ),
        evaluation=evaluation,
    )
    manifest.write(out)


def _relevance_component(
    preset: Preset, grades: tuple[str, ...], bags: BagsExport | None = None
) -> ModelComponent:
    """The relevance model as the manifest lists it: its kind says which student it is and what it reads,
    its grades (the training data's, worst to best) what its probabilities are of."""
    tiered = "tiered (recall + refine) " if preset.methods.tiered_relevance else ""
    if preset.methods.relevance_student == "text":
        text = (
            f"{tiered}MLP over the query's and title's hashed word and character n-grams (embedding bags and "
            "the n-grams they share, by where they sit in the query) and the cosine, lexical coverage and "
            "intent features, distilled from a cross-encoder on unlabelled pairs (BERT2DNN)"
        )
        probabilities = (tensor("probabilities", "float32", "batch", len(grades)),)
        if bags is not None:
            width = len(RELEVANCE_FEATURES) + TEXT_QUERY_IDS + bags.bag_dim
            return ModelComponent(
                "relevance.onnx",
                f"{text}; the query embedded once per call, each product's title bag computed when the "
                f"bundle was built ({TITLE_MODEL} embeds titles given as text)",
                (
                    tensor("query", "float32", 1, 2 * TEXT_QUERY_IDS),
                    tensor("features", "float32", "batch", width),
                ),
                probabilities,
                feature_names=TEXT_BAGS_FEATURES,
                grades=grades,
                kind="text_bags",
                title_model=TITLE_MODEL,
                title_bags=bags.title_bags,
            )
        return ModelComponent(
            "relevance.onnx",
            text,
            (tensor("features", "float32", "batch", TEXT_RELEVANCE_WIDTH),),
            probabilities,
            feature_names=tuple(TEXT_RELEVANCE_FEATURES),
            grades=grades,
            kind="text_mlp",
        )
    return ModelComponent(
        "relevance.onnx",
        f"{tiered}MLP over cosine, lexical coverage and intent features, distilled from a cross-encoder",
        (tensor("features", "float32", "batch", len(RELEVANCE_FEATURES)),),
        (tensor("probabilities", "float32", "batch", len(grades)),),
        feature_names=tuple(RELEVANCE_FEATURES),
        grades=grades,
        kind="feature_mlp",
    )
