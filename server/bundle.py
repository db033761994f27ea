"""The artifact bundle: manifest schema, validation and loading.

A bundle is a directory holding manifest.json plus the files it lists. It is the only contract between
training and serving. Loading checks everything the server relies on and refuses a bundle with a
BundleError whose message names the file or field at fault. Only JSON, ONNX, tokenizer JSON and a usearch
index are ever read from a bundle: nothing in it can execute code.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.featurize import RELEVANCE_FEATURES, Featurizer, FeaturizerConfig, TitleLexicon
from server.rules import GRADES, Rules, parse_rules
from server.runtime.batcher import BatchPolicy
from server.runtime.index import ProductIndex
from server.runtime.onnx import OnnxModel, TensorSpec, ThreadSettings
from server.service.errors import FailedPrecondition

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (2,)
MANIFEST = "manifest.json"
# What each capability needs. A bundle trained without a product catalogue (taxonomy only) has intent alone.
CAPABILITIES = {
    "intent": ("intent",),
    "retrieval": ("query_encoder", "index"),
    "relevance": ("intent", "query_encoder", "index", "relevance"),
}
# File kinds a bundle may hold; anything else in the manifest is refused.
ALLOWED_SUFFIXES = (".onnx", ".json", ".usearch")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BundleError(ValueError):
    """The bundle cannot be served; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Label:
    id: str
    path: str


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    file: str
    sha256: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class Products:
    """The id map of the index: row i of the index is ids[i]."""

    ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: np.ndarray  # int32 label index per row
    row_of: dict[str, int]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def category_id(path: str) -> str:
    """Stable label id from a category path: "Furniture > Accent Chairs" -> "furniture/accent-chairs"."""
    levels = [re.sub(r"[^a-z0-9]+", "-", level.lower()).strip("-") for level in path.split(">")]
    return "/".join(level for level in levels if level)


class Bundle:
    """A validated, loaded bundle: the models, featurizer, index and metadata the services use."""

    def __init__(self, directory: Path, threads: ThreadSettings, batching: BatchPolicy | None = None) -> None:
        self.directory = directory
        self.manifest = _read_manifest(directory)
        m = self.manifest
        self.version: str = _field(m, "bundle_version", str)
        self.schema_version: int = m["schema_version"]
        self.created_at: str = _field(m, "created_at", str)
        self.code_version: str = _field(m, "code_version", str)
        self.embedding_dim: int = _field(m, "embedding_dim", int)
        self.evaluation: dict[str, Any] = _field(m, "evaluation", dict)
        files: dict[str, Any] = _field(m, "files", dict)
        _verify_files(directory, files)

        self.labels = tuple(_parse_labels(_field(m, "labels", list)))
        featurizer_json = _field(m, "featurizer", dict)
        tokenizer_file = _listed_file(featurizer_json, "featurizer", "tokenizer", files)
        try:
            config = FeaturizerConfig.from_json(featurizer_json)
            self.featurizer = Featurizer(directory / tokenizer_file, config)
        except Exception as e:  # a bad config or an unreadable tokenizer.json
            raise BundleError(f"featurizer: {e}") from e

        components = _field(m, "components", dict)
        unknown = set(components) - {"intent", "query_encoder", "relevance", "index", "rules"}
        if unknown:
            raise BundleError(f"{MANIFEST}: unknown components {sorted(unknown)}")
        self.components: dict[str, Component] = {}
        n_labels, dim, n_features = len(self.labels), self.embedding_dim, len(RELEVANCE_FEATURES)
        expected = {
            "intent": ({"ids": ("int64", 2)}, ("float32", n_labels)),
            "query_encoder": ({"ids": ("int64", 2)}, ("float32", dim)),
            "relevance": ({"features": ("float32", 2, n_features)}, ("float32", len(GRADES))),
        }
        models: dict[str, OnnxModel | None] = {}
        for name, (inputs, (out_dtype, out_width)) in expected.items():
            if name not in components:
                models[name] = None
                continue
            comp = _parse_component(name, _field(components, name, dict, f"components.{name}"), files)
            models[name] = _open_model(directory, comp, threads, batching)
            _check_signature(comp, models[name], inputs, out_dtype, out_width)
            self.components[name] = comp
        self.intent, self.query_encoder, self.relevance = (
            models["intent"],
            models["query_encoder"],
            models["relevance"],
        )
        if self.relevance is not None:
            _check_relevance_names(components["relevance"])

        self.index: ProductIndex | None = None
        self.products: Products | None = None
        if "index" in components:
            self.index, self.products = self._open_index(components["index"], files)
        # Relevance over candidates given by id reads the product side of its features from here.
        self.lexicon = (
            TitleLexicon(self.products.titles, self.featurizer)
            if self.products is not None and self.relevance is not None
            else None
        )
        self.capabilities = tuple(
            cap for cap, needs in CAPABILITIES.items() if all(n in self.components for n in needs)
        )
        for name in self.components:
            if not any(name in CAPABILITIES[cap] for cap in self.capabilities):
                raise BundleError(
                    f"components.{name}: present, but no capability is complete without "
                    f"the others it needs ({CAPABILITIES})"
                )
        if not self.capabilities:
            raise BundleError(f"{MANIFEST}: components give no capability; need one of {CAPABILITIES}")

        rules_json = _field(components, "rules", dict, "components.rules")
        rules_file = _listed_file(rules_json, "components.rules", "file", files)
        try:
            raw_rules = json.loads((directory / rules_file).read_text(encoding="utf-8"))
            self.rules: Rules = parse_rules(raw_rules, [label.path for label in self.labels])
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise BundleError(f"{rules_file}: {e}") from e
        self.label_index = {label.id: i for i, label in enumerate(self.labels)}

    def _open_index(self, index_json: Any, files: dict[str, Any]) -> tuple[ProductIndex, Products]:
        if not isinstance(index_json, dict):
            raise BundleError(f"{MANIFEST}: field components.index must be dict")
        index_file = _listed_file(index_json, "components.index", "file", files)
        products_file = _listed_file(index_json, "components.index", "products", files)
        views = index_json.get("views", 1)
        if not isinstance(views, int) or isinstance(views, bool) or views < 1:
            raise BundleError(f"components.index.views: must be a positive integer, got {views!r}")
        self.components["index"] = Component(
            "index", index_file, files[index_file]["sha256"], str(index_json.get("description", "")), (), ()
        )
        try:
            index = ProductIndex(self.directory / index_file, views)
        except Exception as e:
            raise BundleError(f"{index_file}: cannot open the usearch index: {e}") from e
        if index.dim != self.embedding_dim:
            raise BundleError(
                f"{index_file}: index dimension {index.dim} != embedding_dim {self.embedding_dim}"
            )
        if index.metric != "cos":
            raise BundleError(f"{index_file}: index metric must be cos, got {index.metric}")
        products = _load_products(self.directory / products_file, products_file, len(self.labels))
        if len(index) != len(products.ids) * views:
            raise BundleError(
                f"{index_file}: index holds {len(index)} vectors but {products_file} "
                f"lists {len(products.ids)} products with {views} view(s) each"
            )
        if index_json.get("count") != len(products.ids):
            raise BundleError(f"components.index.count: {index_json.get('count')} != {len(products.ids)}")
        return index, products

    def require(self, capability: str) -> None:
        """Raises FailedPrecondition when this bundle was trained without what `capability` needs."""
        if capability not in self.capabilities:
            raise FailedPrecondition(
                f"bundle {self.version} cannot serve {capability}: it has no "
                f"{', '.join(n for n in CAPABILITIES[capability] if n not in self.components)} "
                "(trained without a product catalogue?)"
            )

    def warm_up(self) -> None:
        """One call through every model and the index, so the first request pays no lazy initialisation."""
        ids = self.featurizer.batch_ids(["warm up query"])
        if self.intent is not None:
            self.intent.run({"ids": ids})
        if self.query_encoder is not None and self.index is not None:
            vector = self.query_encoder.run({"ids": ids})[0]
            self.index.search(vector, min(10, len(self.products.ids)))
        if self.relevance is not None:
            self.relevance.run({"features": np.zeros((1, len(RELEVANCE_FEATURES)), dtype=np.float32)})


def load_bundle(
    directory: str | Path, threads: ThreadSettings | None = None, batching: BatchPolicy | None = None
) -> Bundle:
    """Validates and opens the bundle at `directory`; raises BundleError naming what is wrong."""
    path = Path(directory)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle directory does not exist")
    return Bundle(path, threads or ThreadSettings(), batching)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{MANIFEST}: missing in {directory}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{MANIFEST}: not valid JSON: {e}") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST}: must hold a JSON object")
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise BundleError(
            f"{MANIFEST}: schema_version {version!r} is not supported "
            f"(this server reads {SUPPORTED_SCHEMA_VERSIONS})"
        )
    return manifest


def _field(obj: dict[str, Any], key: str, kind: type, where: str | None = None) -> Any:
    where = where or key
    if key not in obj:
        raise BundleError(f"{MANIFEST}: field {where} is missing")
    value = obj[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise BundleError(f"{MANIFEST}: field {where} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _verify_files(directory: Path, files: dict[str, Any]) -> None:
    for name, entry in files.items():
        if not _SAFE_NAME.match(name) or not name.endswith(ALLOWED_SUFFIXES):
            raise BundleError(
                f"files.{name}: not an allowed bundle file (plain names ending {ALLOWED_SUFFIXES})"
            )
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BundleError(f"files.{name}: needs a sha256")
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{name}: listed in the manifest but missing from {directory}")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise BundleError(
                f"{name}: sha256 mismatch (manifest {entry['sha256'][:12]}..., file {actual[:12]}...)"
            )


def _listed_file(obj: dict[str, Any], where: str, key: str, files: dict[str, Any]) -> str:
    name = _field(obj, key, str, f"{where}.{key}")
    if name not in files:
        raise BundleError(f"{where}.{key}: {name} is not listed under files")
    return name


def _parse_labels(raw: list[Any]) -> list[Label]:
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
    return labels


def _parse_specs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleError(f"{MANIFEST}: {where} must be a non-empty list")
    try:
        return tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in raw)
    except (KeyError, TypeError) as e:
        raise BundleError(f"{MANIFEST}: {where} entries need name, dtype and shape") from e


def _parse_component(name: str, raw: dict[str, Any], files: dict[str, Any]) -> Component:
    where = f"components.{name}"
    file = _listed_file(raw, where, "file", files)
    if not file.endswith(".onnx"):
        raise BundleError(f"{where}.file: {file} must be an .onnx file")
    return Component(
        name,
        file,
        files[file]["sha256"],
        str(raw.get("description", "")),
        _parse_specs(raw.get("inputs"), f"{where}.inputs"),
        _parse_specs(raw.get("outputs"), f"{where}.outputs"),
    )


def _open_model(
    directory: Path, comp: Component, threads: ThreadSettings, batching: BatchPolicy | None
) -> OnnxModel:
    try:
        return OnnxModel(directory / comp.file, comp.name, threads, batching)
    except Exception as e:
        raise BundleError(f"{comp.file}: onnxruntime cannot load it: {e}") from e


def _check_signature(
    comp: Component,
    model: OnnxModel,
    inputs: dict[str, tuple[Any, ...]],
    out_dtype: str,
    out_width: int,
) -> None:
    """The manifest, the ONNX graph and what the server feeds must all agree."""
    actual_in, actual_out = model.signature()
    where = f"components.{comp.name}"
    if [s.name for s in comp.inputs] != [s.name for s in actual_in] or set(inputs) != {
        s.name for s in actual_in
    }:
        raise BundleError(
            f"{where}.inputs: manifest {[s.name for s in comp.inputs]}, model {[s.name for s in actual_in]}, "
            f"server feeds {sorted(inputs)}"
        )
    for declared, actual in zip(comp.inputs, actual_in, strict=True):
        dtype, rank, *static = inputs[actual.name]
        if declared.dtype != actual.dtype or actual.dtype != dtype or len(actual.shape) != rank:
            raise BundleError(
                f"{where}.inputs.{actual.name}: expected {dtype} of rank {rank}, "
                f"manifest says {declared.dtype}{list(declared.shape)}, "
                f"model has {actual.dtype}{list(actual.shape)}"
            )
        if static and actual.shape[-1] != static[0]:
            raise BundleError(
                f"{where}.inputs.{actual.name}: last dimension {actual.shape[-1]} != {static[0]}"
            )
    out = actual_out[0]
    declared_out = comp.outputs[0]
    if out.dtype != out_dtype or len(out.shape) != 2 or out.shape[1] != out_width:
        raise BundleError(
            f"{where}.outputs: model output {out.name} is {out.dtype}{list(out.shape)}, "
            f"expected {out_dtype}[batch, {out_width}]"
        )
    if declared_out.name != out.name or tuple(declared_out.shape[1:]) != (out_width,):
        raise BundleError(
            f"{where}.outputs: manifest says {declared_out.name}{list(declared_out.shape)}, "
            f"model has {out.name}{list(out.shape)}"
        )


def _check_relevance_names(relevance: dict[str, Any]) -> None:
    if relevance.get("feature_names") != list(RELEVANCE_FEATURES):
        raise BundleError(
            f"components.relevance.feature_names: expected {list(RELEVANCE_FEATURES)}, "
            f"got {relevance.get('feature_names')}"
        )
    if relevance.get("grades") != list(GRADES):
        raise BundleError(
            f"components.relevance.grades: expected {list(GRADES)}, got {relevance.get('grades')}"
        )


def _load_products(path: Path, name: str, n_labels: int) -> Products:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ids, titles, categories = raw["ids"], raw["titles"], raw["categories"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BundleError(f"{name}: must be JSON with ids, titles and categories lists ({e})") from e
    if not (len(ids) == len(titles) == len(categories)):
        raise BundleError(f"{name}: ids, titles and categories differ in length")
    if len(set(ids)) != len(ids):
        raise BundleError(f"{name}: product ids are not unique")
    cats = np.asarray(categories, dtype=np.int64)
    if len(cats) and (cats.min() < 0 or cats.max() >= n_labels):
        raise BundleError(f"{name}: a category index is outside the {n_labels} labels")
    return Products(tuple(ids), tuple(titles), cats.astype(np.int32), {pid: i for i, pid in enumerate(ids)})
