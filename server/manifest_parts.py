"""The parts of a bundle manifest as types: the constants of the schema, the error every refusal raises,
and one frozen dataclass per section (tensors, labels, files, the featurizer and each component). The
manifest itself, its parsing and its writing are in server/manifest.py, which re-exports all of this."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (2,)
MANIFEST = "manifest.json"
# What each capability needs. A bundle trained without a product catalogue (taxonomy only) has intent alone.
CAPABILITIES = {
    "intent": ("intent",),
    "retrieval": ("query_encoder", "index"),
    "relevance": ("intent", "query_encoder", "index", "relevance"),
}
# Parts a capability may carry beyond what it needs: with them it is served better, without them as before.
#   query_student: the transformer query tower; Search and EmbedQuery embed the query with it when present
#     (the hashed query_encoder stays: relevance embeds candidate titles with it).
#   lexical: a BM25 index over the titles, for Search's lexical and hybrid modes.
OPTIONAL = {"query_student": "retrieval", "lexical": "retrieval"}
MODEL_COMPONENTS = ("intent", "query_encoder", "query_student", "relevance")
# In the order training writes them (its stages' order), so a manifest read and written back is unchanged.
COMPONENTS = ("intent", "query_encoder", "query_student", "index", "lexical", "relevance", "rules")
SEARCH_MODES = ("dense", "lexical", "hybrid")
# The kinds of model each model component may hold; the first is what an absent `kind` means.
KINDS: dict[str, tuple[str, ...]] = {
    "intent": ("hashed_mlp",),
    "query_encoder": ("hashed_mlp",),
    "query_student": ("transformer",),
    "relevance": ("feature_mlp",),
}
# File kinds a bundle may hold; anything else in the manifest is refused.
ALLOWED_SUFFIXES = (".onnx", ".json", ".usearch", ".npy")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BundleError(ValueError):
    """The bundle cannot be served; the message says what is wrong."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def category_id(path: str) -> str:
    """Stable label id from a category path: "Furniture > Accent Chairs" -> "furniture/accent-chairs".
    Accented letters keep their base letter ("Wall Décor" -> "wall-decor", not "wall-d-cor")."""
    ascii_path = unicodedata.normalize("NFKD", path).encode("ascii", "ignore").decode("ascii")
    levels = [re.sub(r"[^a-z0-9]+", "-", level.lower()).strip("-") for level in ascii_path.split(">")]
    return "/".join(level for level in levels if level)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]
    """Static sizes as ints, dynamic axes as their names."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def tensor(name: str, dtype: str, *shape: int | str) -> TensorSpec:
    """tensor("ids", "int64", "batch", "features"): a model input or output as the manifest declares it."""
    return TensorSpec(name, dtype, shape)


@dataclass(frozen=True, slots=True)
class Label:
    id: str
    path: str

    @classmethod
    def of(cls, path: str) -> Label:
        return cls(category_id(path), path)


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    bytes: int | None = None  # the size, for people reading the manifest; the sha256 is what is checked

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        return cls(sha256_file(path), path.stat().st_size)

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256} | ({} if self.bytes is None else {"bytes": self.bytes})


def files_of(directory: Path) -> dict[str, FileEntry]:
    """Every file in `directory` but the manifest, by name in sorted order: a bundle's `files`."""
    return {f.name: FileEntry.of(f) for f in sorted(directory.iterdir()) if f.name != MANIFEST}


@dataclass(frozen=True, slots=True)
class FeaturizerSection:
    """server/featurize.py's FeaturizerConfig.to_json(), and the tokenizer file it runs after."""

    config: dict[str, Any]
    tokenizer: str

    def to_json(self) -> dict[str, Any]:
        return {**self.config, "tokenizer": self.tokenizer}


@dataclass(frozen=True, slots=True)
class ModelComponent:
    """An ONNX model: its file, how it is called, and (relevance only) its feature columns and grades."""

    file: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature_names: tuple[str, ...] | None = None
    grades: tuple[str, ...] | None = None
    kind: str | None = None  # None: the component's original kind, KINDS[name][0]
    max_tokens: int | None = None  # transformer kinds: word pieces kept per text (featurizer's tokenizer)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "description": self.description,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
        }
        optional = {
            "feature_names": self.feature_names,
            "grades": self.grades,
            "kind": self.kind,
            "max_tokens": self.max_tokens,
        }
        return out | {k: list(v) if isinstance(v, tuple) else v for k, v in optional.items() if v is not None}


@dataclass(frozen=True, slots=True)
class IndexComponent:
    """The usearch index (`views` vectors per product) and products.json, its row -> product map."""

    file: str
    products: str
    description: str = ""
    metric: str = "cos"
    views: int = 1
    count: int | None = None  # products in the index

    def to_json(self) -> dict[str, Any]:
        out = {"file": self.file, "products": self.products, "description": self.description}
        return out | {"metric": self.metric, "views": self.views, "count": self.count}


@dataclass(frozen=True, slots=True)
class LexicalComponent:
    """BM25 over product titles (server/runtime/lexical.py): its vocabulary and CSR arrays, row for row
    with the index's products, and how Search fuses it with the dense hits."""

    vocabulary: str
    indptr: str
    postings: str
    weights: str
    description: str = ""
    k1: float = 1.2
    b: float = 0.75
    default_mode: str = "dense"
    """The Search mode of a request that names none: whichever measured best on held-out products."""
    rrf_k: int = 60
    """Reciprocal rank fusion's constant (1 / (rrf_k + rank))."""
    dense_weight: float = 1.0
    """The dense list's weight in the fusion (the lexical list's is 1), chosen on held-out products."""
    depth: int = 100
    """Hits taken from each side before fusing (at least the request's k)."""

    def files(self) -> tuple[str, str, str, str]:
        return (self.vocabulary, self.indptr, self.postings, self.weights)

    def to_json(self) -> dict[str, Any]:
        return {
            "vocabulary": self.vocabulary,
            "indptr": self.indptr,
            "postings": self.postings,
            "weights": self.weights,
            "description": self.description,
            "k1": self.k1,
            "b": self.b,
            "default_mode": self.default_mode,
            "rrf_k": self.rrf_k,
            "dense_weight": self.dense_weight,
            "depth": self.depth,
        }


@dataclass(frozen=True, slots=True)
class RulesComponent:
    file: str
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "description": self.description}


@dataclass(frozen=True, slots=True)
class Components:
    """The bundle's parts; every bundle has rules, the rest as its capabilities need (CAPABILITIES)."""

    rules: RulesComponent
    intent: ModelComponent | None = None
    query_encoder: ModelComponent | None = None
    query_student: ModelComponent | None = None
    relevance: ModelComponent | None = None
    index: IndexComponent | None = None
    lexical: LexicalComponent | None = None

    def present(self) -> tuple[str, ...]:
        """Names of the components present other than rules, in COMPONENTS order."""
        return tuple(n for n in COMPONENTS if n != "rules" and getattr(self, n) is not None)

    def capabilities(self) -> tuple[str, ...]:
        present = self.present()
        return tuple(cap for cap, needs in CAPABILITIES.items() if all(n in present for n in needs))

    def models(self) -> dict[str, ModelComponent]:
        return {n: getattr(self, n) for n in MODEL_COMPONENTS if getattr(self, n) is not None}

    def to_json(self) -> dict[str, Any]:
        return {n: getattr(self, n).to_json() for n in (*self.present(), "rules")}
