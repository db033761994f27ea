"""The manifest types: what training builds is what the server parses back, and a bad field is named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from server.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    BundleError,
    Components,
    FeaturizerSection,
    FileEntry,
    IndexComponent,
    Label,
    LexicalComponent,
    Manifest,
    ModelComponent,
    RulesComponent,
    files_of,
    tensor,
)

LABELS = ("Furniture > Sofas", "Furniture > Accent Chairs", "Lighting > Lamps")


def build(directory: Path) -> Manifest:
    """A manifest built as training builds one, over placeholder files."""
    for model in ("intent", "query_encoder", "relevance"):
        (directory / f"{model}.onnx").write_bytes(model.encode())
    for name in ("index.usearch", "products.json", "rules.json"):
        (directory / name).write_bytes(name.encode())
    (directory / "tokenizer.json").write_text("{}")
    ids = (tensor("ids", "int64", "batch", "features"),)
    return Manifest(
        bundle_version="tiny-20260101T000000Z",
        created_at="2026-01-01T00:00:00Z",
        code_version="sift 0.1.0 (git abc1234)",
        embedding_dim=384,
        files=files_of(directory),
        featurizer=FeaturizerSection(
            {"kind": "hashed_ngrams", "hash": "crc32", "num_buckets": 1024}, "tokenizer.json"
        ),
        labels=tuple(Label.of(path) for path in LABELS),
        components=Components(
            intent=ModelComponent(
                "intent.onnx", "an MLP", ids, (tensor("probabilities", "float32", "batch", len(LABELS)),)
            ),
            query_encoder=ModelComponent(
                "query_encoder.onnx", "an MLP", ids, (tensor("embedding", "float32", "batch", 384),)
            ),
            relevance=ModelComponent(
                "relevance.onnx",
                "an MLP over features",
                (tensor("features", "float32", "batch", 2),),
                (tensor("probabilities", "float32", "batch", 3),),
                feature_names=("cosine", "coverage"),
                grades=("irrelevant", "partial", "exact"),
            ),
            index=IndexComponent("index.usearch", "products.json", "HNSW", views=2, count=10),
            rules=RulesComponent("rules.json", "mined rules"),
        ),
        training={"preset": {"name": "tiny"}, "seed": 0},
        evaluation={"intent": {"top1": 0.9}},
    )


def test_built_manifest_round_trips(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    path = manifest.write(tmp_path)
    assert path == tmp_path / MANIFEST
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["labels"][1] == {"id": "furniture/accent-chairs", "path": "Furniture > Accent Chairs"}
    assert raw["featurizer"]["tokenizer"] == "tokenizer.json"
    assert list(raw["components"]) == ["intent", "query_encoder", "index", "relevance", "rules"]
    assert raw["components"]["relevance"]["grades"] == ["irrelevant", "partial", "exact"]
    assert "kind" not in raw["components"]["intent"]  # absent: the component's original kind
    read = Manifest.read(tmp_path)
    assert read == manifest
    assert read.to_json() == raw
    assert read.components.capabilities() == ("intent", "retrieval", "relevance")
    read.verify_files(tmp_path)


def test_files_of_lists_sizes_and_skips_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]")
    (tmp_path / MANIFEST).write_text("{}")
    digest = hashlib.sha256(b"[]")
    parts = hashlib.sha256(digest.digest()).hexdigest()  # one part: the sha256 of its sha256
    assert files_of(tmp_path) == {"a.json": FileEntry(digest.hexdigest(), 2, parts)}


def test_write_refuses_an_invalid_manifest(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    broken = Manifest(**{**_fields(manifest), "files": {}})
    with pytest.raises(BundleError, match="featurizer.tokenizer: tokenizer.json is not listed under files"):
        broken.write(tmp_path)
    assert not (tmp_path / MANIFEST).exists()


def _fields(manifest: Manifest) -> dict[str, Any]:
    return {name: getattr(manifest, name) for name in Manifest.__dataclass_fields__}


def _refused(tmp_path: Path, change: Any, match: str, make: Any = None) -> None:
    raw = (make or build)(tmp_path).to_json()
    change(raw)
    with pytest.raises(BundleError, match=match):
        Manifest.from_json(json.loads(json.dumps(raw)))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.update(schema_version=4), "schema_version 4 is not supported"),
        (lambda m: m.pop("code_version"), "field code_version is missing"),
        (lambda m: m.update(embedding_dim=True), "field embedding_dim must be int, got bool"),
        (lambda m: m["files"].update({"x.pkl": {"sha256": "0"}}), "files.x.pkl: not an allowed bundle file"),
        (lambda m: m["files"]["rules.json"].pop("sha256"), "files.rules.json: needs a sha256"),
        (lambda m: m.update(labels=[]), "labels must not be empty"),
        (lambda m: m["labels"].append(m["labels"][0]), "labels hold duplicate ids"),
        (lambda m: m["labels"].append({"id": 1}), r"labels\[3\] must be an object"),
        (lambda m: m["components"].update(reranker={}), r"unknown components \['reranker'\]"),
        (lambda m: m["components"].pop("rules"), "field components.rules is missing"),
        (lambda m: m["components"]["intent"].update(file="rules.json"), "must be an .onnx file"),
        (lambda m: m["components"]["intent"].update(file="no.onnx"), "no.onnx is not listed under files"),
        (lambda m: m["components"]["intent"].update(outputs=[]), "intent.outputs must be a non-empty"),
        (lambda m: m["components"]["intent"].update(kind="bert"), "components.intent.kind: 'bert'"),
        (lambda m: m["components"]["index"].update(views=0), "components.index.views: must be a positive"),
        (
            lambda m: [m["components"].pop(n) for n in ("index", "relevance")],
            "components.query_encoder: present, but no capability",
        ),
        (lambda m: m["components"]["relevance"].update(grades="exact"), "relevance.grades: must be a list"),
        (
            lambda m: [m["components"].pop(n) for n in ("intent", "query_encoder", "index", "relevance")],
            "components give no capability",
        ),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, change: Any, match: str) -> None:
    _refused(tmp_path, change, match)


def test_verify_files_names_the_file(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    (tmp_path / "rules.json").write_text("changed")
    with pytest.raises(BundleError, match="rules.json: sha256 mismatch"):
        manifest.verify_files(tmp_path)
    (tmp_path / "rules.json").unlink()
    with pytest.raises(BundleError, match="rules.json: listed in the manifest but missing"):
        manifest.verify_files(tmp_path)


def with_extras(directory: Path) -> Manifest:
    """The manifest above plus the optional retrieval parts: the transformer query student and BM25."""
    manifest = build(directory)
    (directory / "query_student.onnx").write_bytes(b"student")
    names = ("lexical_vocab.json", "lexical_indptr.npy", "lexical_postings.npy", "lexical_weights.npy")
    for name in names:
        (directory / name).write_bytes(name.encode())
    student = ModelComponent(
        "query_student.onnx",
        "three layers",
        (tensor("input_ids", "int64", "batch", "tokens"),),
        (tensor("embedding", "float32", "batch", 384),),
        kind="transformer",
        max_tokens=32,
    )
    parts = {name: getattr(manifest.components, name) for name in Components.__dataclass_fields__}
    components = Components(**{**parts, "query_student": student, "lexical": LexicalComponent(*names)})
    return Manifest(**{**_fields(manifest), "files": files_of(directory), "components": components})


def test_optional_retrieval_parts_round_trip(tmp_path: Path) -> None:
    manifest = with_extras(tmp_path)
    manifest.write(tmp_path)
    read = Manifest.read(tmp_path)
    assert read == manifest
    raw = read.to_json()["components"]
    assert raw["query_student"]["kind"] == "transformer" and raw["query_student"]["max_tokens"] == 32
    assert raw["lexical"]["default_mode"] == "dense" and raw["lexical"]["rrf_k"] == 60


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m["components"]["query_student"].pop("max_tokens"), "query_student.max_tokens"),
        (lambda m: m["components"]["query_student"].update(max_tokens=4096), "query_student.max_tokens"),
        (lambda m: m["components"]["query_student"].update(kind="hashed_mlp"), "query_student.kind"),
        (lambda m: m["components"]["lexical"].update(default_mode="fuzzy"), "lexical.default_mode"),
        (lambda m: m["components"]["lexical"].update(depth=0), "lexical.depth"),
        (lambda m: m["components"]["lexical"].update(weights="lexical_vocab.json"), "lexical.weights"),
        (
            lambda m: [m["components"].pop(n) for n in ("index", "relevance", "query_encoder")],
            "components.query_student: present, but the bundle cannot serve retrieval",
        ),
    ],
)
def test_a_bad_optional_part_is_named(tmp_path: Path, change: Any, match: str) -> None:
    _refused(tmp_path, change, match, with_extras)


def test_category_ids_keep_the_base_letter_of_accented_words() -> None:
    assert Label.of("Décor > Wall Décor").id == "decor/wall-decor"
    assert Label.of("Furniture > Accent Chairs").id == "furniture/accent-chairs"
