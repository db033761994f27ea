"""The bundle manifest (manifest.json) as types: its schema, parsing with validation, and building.

A bundle is a directory holding manifest.json plus the files it lists; the manifest is the one contract
between training and serving. This module holds that contract and depends on the standard library alone,
so training, the server (server/bundle.py, which then opens the runtimes) and the MLServer peer runtime
all read and write it with the same types. Every problem is a BundleError whose message names the field.

Reading:

    manifest = Manifest.read(directory)   # the JSON, its schema version, every field's type
    manifest.verify_files(directory)      # every listed file present, with its sha256

Building (what training writes):

    manifest = Manifest(
        bundle_version="default-20260101T000000Z", created_at="2026-01-01T00:00:00Z", code_version="...",
        embedding_dim=384,
        files=files_of(out),                               # every file in `out` but the manifest
        featurizer=FeaturizerSection(config=FeaturizerConfig(...).to_json(), tokenizer="tokenizer.json"),
        labels=tuple(Label.of(path) for path in category_paths),
        components=Components(
            intent=ModelComponent("intent.onnx", "...", inputs=(tensor("ids", "int64", "batch", "features"),),
                                  outputs=(tensor("probabilities", "float32", "batch", n_labels),)),
            index=IndexComponent("index.usearch", "products.json", "...", views=1, count=n_products),
            rules=RulesComponent("rules.json", "..."),
        ),
        training={...}, evaluation={...},
    )
    manifest.write(out)                                    # manifest.json, as Manifest.read reads it

`Manifest.from_json(manifest.to_json()) == manifest` for every valid manifest. A model component may carry
an optional `kind` (what architecture the file holds, so the server knows how to feed it); absent means the
component's original kind, and today each component has only that one (KINDS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.manifest_parts import (
    ALLOWED_SUFFIXES,
    CAPABILITIES,
    COMPONENTS,
    INDEX_SLOTS,
    KINDS,
    MANIFEST,
    MODEL_COMPONENTS,
    OPTIONAL,
    OPTIONAL_ARRAYS,
    PRODUCT_ARRAYS,
    QUERY_VECTORS,
    SAFE_NAME,
    SCHEMA_VERSION,
    SEARCH_MODES,
    SUPPORTED_SCHEMA_VERSIONS,
    TOKEN_KINDS,
    ArraySpec,
    BundleError,
    Components,
    FeaturizerSection,
    FileEntry,
    IndexComponent,
    Label,
    LexicalComponent,
    ModelComponent,
    RulesComponent,
    TensorSpec,
    array_file,
    category_id,
    check_array_shapes,
    files_of,
    parts_sha256,
    sha256_file,
    tensor,
)

__all__ = [
    "ALLOWED_SUFFIXES",
    "CAPABILITIES",
    "COMPONENTS",
    "INDEX_SLOTS",
    "KINDS",
    "MANIFEST",
    "MODEL_COMPONENTS",
    "OPTIONAL",
    "OPTIONAL_ARRAYS",
    "PRODUCT_ARRAYS",
    "SAFE_NAME",
    "SCHEMA_VERSION",
    "SEARCH_MODES",
    "SUPPORTED_SCHEMA_VERSIONS",
    "ArraySpec",
    "BundleError",
    "Components",
    "FeaturizerSection",
    "FileEntry",
    "IndexComponent",
    "Label",
    "LexicalComponent",
    "Manifest",
    "ModelComponent",
    "RulesComponent",
    "TensorSpec",
    "array_file",
    "category_id",
    "check_array_shapes",
    "files_of",
    "parts_sha256",
    "sha256_file",
    "tensor",
]


@dataclass(frozen=True, slots=True)
class Manifest:
    bundle_version: str
    created_at: str
    code_version: str
    embedding_dim: int
    files: dict[str, FileEntry]
    featurizer: FeaturizerSection
    labels: tuple[Label, ...]
    components: Components
    evaluation: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "bundle_version": self.bundle_version,
            "created_at": self.created_at,
            "code_version": self.code_version,
            "training": self.training,
            "embedding_dim": self.embedding_dim,
            "files": {name: entry.to_json() for name, entry in self.files.items()},
            "featurizer": self.featurizer.to_json(),
            "labels": [{"id": label.id, "path": label.path} for label in self.labels],
            "components": self.components.to_json(),
            "evaluation": self.evaluation,
        }

    def write(self, directory: Path) -> Path:
        """Writes directory/manifest.json (checked as it would be read) and returns its path."""
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        Manifest.from_json(json.loads(text))
        path = directory / MANIFEST
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise BundleError(f"{MANIFEST}: missing in {directory}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{MANIFEST}: not valid JSON: {e}") from e
        return cls.from_json(raw)

    @classmethod
    def from_json(cls, m: Any) -> Manifest:
        """Checks the schema version and every field's type and reference; BundleError names the field."""
        if not isinstance(m, dict):
            raise BundleError(f"{MANIFEST}: must hold a JSON object")
        version = m.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise BundleError(
                f"{MANIFEST}: schema_version {version!r} is not supported "
                f"(this server reads {SUPPORTED_SCHEMA_VERSIONS})"
            )
        bundle_version = _field(m, "bundle_version", str)
        created_at = _field(m, "created_at", str)
        code_version = _field(m, "code_version", str)
        embedding_dim = _field(m, "embedding_dim", int)
        evaluation = _field(m, "evaluation", dict)
        training = m.get("training", {})
        if not isinstance(training, dict):
            raise BundleError(f"{MANIFEST}: field training must be dict, got {type(training).__name__}")
        files = _parse_files(_field(m, "files", dict))
        labels = _parse_labels(_field(m, "labels", list))
        featurizer_json = dict(_field(m, "featurizer", dict))
        tokenizer = _listed_file(featurizer_json, "featurizer", "tokenizer", files)
        del featurizer_json["tokenizer"]
        components = _parse_components(_field(m, "components", dict), files)
        index = components.index
        if index is not None and index.arrays is not None:
            if version < 3:
                raise BundleError(
                    f"components.index.arrays: needs schema_version 3, the manifest says {version}"
                )
            if index.count is None:
                raise BundleError("components.index.count: needed with arrays")
        return cls(
            bundle_version=bundle_version,
            created_at=created_at,
            code_version=code_version,
            embedding_dim=embedding_dim,
            files=files,
            featurizer=FeaturizerSection(featurizer_json, tokenizer),
            labels=labels,
            components=components,
            evaluation=evaluation,
            training=training,
            schema_version=version,
        )

    def check_arrays(self) -> None:
        """The product arrays' dtypes and shapes against PRODUCT_ARRAYS, the product count and the labels
        (server/bundle.py calls it once the models agree with the labels, so a label count that disagrees
        with the models is reported as that)."""
        index = self.components.index
        if index is not None and index.arrays is not None:
            check_array_shapes(
                index.arrays,
                index.count or 0,
                len(self.labels),
                self.embedding_dim,
                "components.index.arrays",
                index.views,
            )

    def verify_files(self, directory: Path) -> None:
        """Every listed file is in `directory` with the size and hash the manifest gives: the parts hash
        (every part of every file in parallel) where the manifest has one, else the whole file's sha256."""
        for name, entry in self.files.items():
            path = directory / name
            if not path.is_file():
                raise BundleError(f"{name}: listed in the manifest but missing from {directory}")
            size = path.stat().st_size
            if entry.bytes is not None and size != entry.bytes:
                raise BundleError(f"{name}: sha256 mismatch: {size} bytes, the manifest says {entry.bytes}")
        parted = [name for name, entry in self.files.items() if entry.parts is not None]
        for name, actual in zip(parted, parts_sha256([directory / n for n in parted]), strict=True):
            if actual != self.files[name].parts:
                raise BundleError(
                    f"{name}: sha256 mismatch (parts hash: manifest {self.files[name].parts[:12]}..., "
                    f"file {actual[:12]}...)"
                )
        for name, entry in self.files.items():
            if entry.parts is None and (actual := sha256_file(directory / name)) != entry.sha256:
                raise BundleError(
                    f"{name}: sha256 mismatch (manifest {entry.sha256[:12]}..., file {actual[:12]}...)"
                )


def _field(obj: dict[str, Any], key: str, kind: type, where: str | None = None) -> Any:
    where = where or key
    if key not in obj:
        raise BundleError(f"{MANIFEST}: field {where} is missing")
    value = obj[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise BundleError(f"{MANIFEST}: field {where} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_files(raw: dict[str, Any]) -> dict[str, FileEntry]:
    files = {}
    for name, entry in raw.items():
        if not SAFE_NAME.match(name) or not name.endswith(ALLOWED_SUFFIXES):
            raise BundleError(
                f"files.{name}: not an allowed bundle file (plain names ending {ALLOWED_SUFFIXES})"
            )
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BundleError(f"files.{name}: needs a sha256")
        size = entry.get("bytes")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise BundleError(f"files.{name}.bytes: must be a non-negative integer, got {size!r}")
        parts = entry.get("parts")
        if parts is not None and not isinstance(parts, str):
            raise BundleError(f"files.{name}.parts: must be a string, got {parts!r}")
        files[name] = FileEntry(entry["sha256"], size, parts)
    return files


def _listed_file(obj: dict[str, Any], where: str, key: str, files: dict[str, FileEntry]) -> str:
    name = _field(obj, key, str, f"{where}.{key}")
    if name not in files:
        raise BundleError(f"{where}.{key}: {name} is not listed under files")
    return name


def _parse_labels(raw: list[Any]) -> tuple[Label, ...]:
    labels = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("path"), str)
        ):
            raise BundleError(f"{MANIFEST}: labels[{i}] must be an object with string id and path")
        labels.append(Label(item["id"], item["path"]))
    if not labels:
        raise BundleError(f"{MANIFEST}: labels must not be empty")
    if len({label.id for label in labels}) != len(labels):
        raise BundleError(f"{MANIFEST}: labels hold duplicate ids")
    return tuple(labels)


def _parse_components(raw: dict[str, Any], files: dict[str, FileEntry]) -> Components:
    unknown = set(raw) - set(COMPONENTS)
    if unknown:
        raise BundleError(f"{MANIFEST}: unknown components {sorted(unknown)}")
    parsed: dict[str, Any] = {}
    for name in MODEL_COMPONENTS:
        if name in raw:
            parsed[name] = _parse_model(name, _field(raw, name, dict, f"components.{name}"), files)
    if "index" in raw:
        parsed["index"] = _parse_index(_field(raw, "index", dict, "components.index"), files)
    rules = _field(raw, "rules", dict, "components.rules")
    parsed["rules"] = RulesComponent(
        _listed_file(rules, "components.rules", "file", files), str(rules.get("description", ""))
    )
    if "lexical" in raw:
        parsed["lexical"] = _parse_lexical(_field(raw, "lexical", dict, "components.lexical"), files)
    components = Components(**parsed)
    capabilities = components.capabilities()
    for name in components.present():
        if name in OPTIONAL:
            if OPTIONAL[name] not in capabilities:
                raise BundleError(f"components.{name}: present, but the bundle cannot serve {OPTIONAL[name]}")
            continue
        if not any(name in CAPABILITIES[cap] for cap in capabilities):
            raise BundleError(
                f"components.{name}: present, but no capability is complete without "
                f"the others it needs ({CAPABILITIES})"
            )
    if not capabilities:
        raise BundleError(f"{MANIFEST}: components give no capability; need one of {CAPABILITIES}")
    return components


def _parse_specs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleError(f"{MANIFEST}: {where} must be a non-empty list")
    try:
        return tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in raw)
    except (KeyError, TypeError) as e:
        raise BundleError(f"{MANIFEST}: {where} entries need name, dtype and shape") from e


def _strings(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"{where}.{key}: must be a list of strings, got {value!r}")
    return tuple(value)


def _parse_model(name: str, raw: dict[str, Any], files: dict[str, FileEntry]) -> ModelComponent:
    where = f"components.{name}"
    file = _listed_file(raw, where, "file", files)
    if not file.endswith(".onnx"):
        raise BundleError(f"{where}.file: {file} must be an .onnx file")
    kind = raw.get("kind")
    if kind is not None and kind not in KINDS[name]:
        raise BundleError(f"{where}.kind: {kind!r} is not one this server serves {KINDS[name]}")
    max_tokens = raw.get("max_tokens")
    if (kind or KINDS[name][0]) in TOKEN_KINDS and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 2 <= max_tokens <= 512
    ):
        raise BundleError(
            f"{where}.max_tokens: a {kind or KINDS[name][0]} model needs an integer in [2, 512], "
            f"got {max_tokens!r}"
        )
    title_model = title_bags = None
    if kind == "text_bags":
        title_model = _listed_file(raw, where, "title_model", files)
        if not title_model.endswith(".onnx"):
            raise BundleError(f"{where}.title_model: {title_model} must be an .onnx file")
        if not isinstance(raw.get("title_bags"), dict):
            raise BundleError(f"{where}.title_bags: a text_bags model needs its products' title bags")
        title_bags = _parse_arrays({"title_bags": raw["title_bags"]}, files, where)["title_bags"]
    query_vector = raw.get("query_vector")
    if query_vector is not None and (name != "relevance" or query_vector not in QUERY_VECTORS):
        raise BundleError(
            f"{where}.query_vector: {query_vector!r} is not one of {QUERY_VECTORS} (relevance models only)"
        )
    return ModelComponent(
        file=file,
        description=str(raw.get("description", "")),
        inputs=_parse_specs(raw.get("inputs"), f"{where}.inputs"),
        outputs=_parse_specs(raw.get("outputs"), f"{where}.outputs"),
        feature_names=_strings(raw, "feature_names", where),
        grades=_strings(raw, "grades", where),
        kind=kind,
        max_tokens=max_tokens,
        title_model=title_model,
        title_bags=title_bags,
        query_vector=query_vector,
    )


def _parse_arrays(raw: Any, files: dict[str, FileEntry], where: str) -> dict[str, ArraySpec]:
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: must be an object of {list(PRODUCT_ARRAYS)}")
    arrays = {}
    for role, spec in raw.items():
        if not isinstance(spec, dict):
            raise BundleError(f"{where}.{role}: must be an object with file, dtype and shape")
        file = _listed_file(spec, f"{where}.{role}", "file", files)
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if not file.endswith(".npy") or not isinstance(dtype, str):
            raise BundleError(f"{where}.{role}: needs an .npy file and a dtype string")
        if not isinstance(shape, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape
        ):
            raise BundleError(f"{where}.{role}.shape: must be a list of non-negative integers, got {shape!r}")
        arrays[role] = ArraySpec(file, dtype, tuple(shape))
    return arrays


def _parse_index(raw: dict[str, Any], files: dict[str, FileEntry]) -> IndexComponent:
    where = "components.index"
    file = _listed_file(raw, where, "file", files)
    arrays = _parse_arrays(raw["arrays"], files, f"{where}.arrays") if "arrays" in raw else None
    products = (
        None if arrays is not None and "products" not in raw else _listed_file(raw, where, "products", files)
    )
    views = raw.get("views", 1)
    if not isinstance(views, int) or isinstance(views, bool) or views < 1:
        raise BundleError(f"{where}.views: must be a positive integer, got {views!r}")
    count = raw.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
        raise BundleError(f"{where}.count: must be an integer, got {count!r}")
    metric = raw.get("metric", "cos")
    if not isinstance(metric, str):
        raise BundleError(f"{where}.metric: must be a string, got {metric!r}")
    return IndexComponent(file, products, str(raw.get("description", "")), metric, views, count, arrays)


def _parse_lexical(raw: dict[str, Any], files: dict[str, FileEntry]) -> LexicalComponent:
    where = "components.lexical"
    names = [_listed_file(raw, where, key, files) for key in ("vocabulary", "indptr", "postings", "weights")]
    for key, name in zip(("indptr", "postings", "weights"), names[1:], strict=True):
        if not name.endswith(".npy"):
            raise BundleError(f"{where}.{key}: {name} must be an .npy file")
    numbers = {}
    for key, kind, default in (
        ("k1", float, 1.2),
        ("b", float, 0.75),
        ("rrf_k", int, 60),
        ("dense_weight", float, 1.0),
        ("depth", int, 100),
    ):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BundleError(f"{where}.{key}: must be a non-negative number, got {value!r}")
        numbers[key] = kind(value)
    if numbers["depth"] < 1:
        raise BundleError(f"{where}.depth: must be at least 1, got {numbers['depth']}")
    mode = raw.get("default_mode", "dense")
    if mode not in SEARCH_MODES:
        raise BundleError(f"{where}.default_mode: must be one of {SEARCH_MODES}, got {mode!r}")
    return LexicalComponent(*names, str(raw.get("description", "")), default_mode=mode, **numbers)
