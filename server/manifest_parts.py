"""The parts of a bundle manifest as types: the constants of the schema, the error every refusal raises,
and one frozen dataclass per section (tensors, labels, files, the featurizer and each component). The
manifest itself, its parsing and its writing are in server/manifest.py, which re-exports all of this."""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# 3: the product side as memory-mapped arrays (components.index.arrays) and files hashed in parts.
SCHEMA_VERSION = 3
SUPPORTED_SCHEMA_VERSIONS = (2, 3)
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
#   query_static: static word-piece vectors, the relevance cosine's query model when the relevance model
#     was trained on it (query_vector).
OPTIONAL = {"query_student": "retrieval", "lexical": "retrieval", "query_static": "relevance"}
QUERY_VECTORS = ("query_encoder", "query_student", "query_static")
"""Where the relevance cosine feature's query vector comes from: the hashed n-gram encoder, the
transformer query student that Search embeds queries with (closer to the teacher on real query text), or
the static word-piece model (a lookup and a mean over MiniLM's whole vocabulary)."""
MODEL_COMPONENTS = ("intent", "query_encoder", "query_student", "query_static", "relevance")
# In the order training writes them (its stages' order), so a manifest read and written back is unchanged.
COMPONENTS = (
    "intent",
    "query_encoder",
    "query_student",
    "query_static",
    "index",
    "lexical",
    "relevance",
    "rules",
)
SEARCH_MODES = ("dense", "lexical", "hybrid")
# The kinds of model each model component may hold; the first is what an absent `kind` means.
KINDS: dict[str, tuple[str, ...]] = {
    "intent": ("hashed_mlp",),
    "query_encoder": ("hashed_mlp",),
    "query_student": ("transformer",),
    "query_static": ("static_wordpiece",),
    # feature_mlp: the four RELEVANCE_FEATURES; text_mlp: those, then the query's and title's n-gram ids
    # and their matches (server/featurize.py text_relevance_input); text_bags: the same student as two
    # graphs, the query read once per call and each product's title bag precomputed (title_model,
    # title_bags).
    "relevance": ("feature_mlp", "text_mlp", "text_bags"),
}
TOKEN_KINDS = ("transformer", "static_wordpiece")
"""Model kinds fed word pieces of the featurizer's tokenizer.json (server/query_tokens.py): they name
their max_tokens."""
# File kinds a bundle may hold; anything else in the manifest is refused.
ALLOWED_SUFFIXES = (".onnx", ".json", ".usearch", ".npy")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BundleError(ValueError):
    """The bundle cannot be served; the message says what is wrong."""


PART_BYTES = 64 << 20
"""A file's `parts` hash is the sha256 of its PART_BYTES parts' sha256 digests, in order: the parts of
every file are hashed in parallel (hashlib releases the GIL), so a gigabyte index is checked in a fraction
of the time one whole-file sha256 takes."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _part_digest(path: Path, start: int) -> bytes:
    """sha256 of the file's PART_BYTES from `start`, read through a memory map: the pool's threads then
    allocate no read buffers (8 MiB reads raised glibc's mmap threshold, and a freed pair of them stayed in a
    thread's malloc arena: 16 MiB of the serving process's private memory in about half of the starts)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # nothing to map: the one part of an empty file
            return hashlib.sha256().digest()
        with (
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
            memoryview(mapped) as whole,
            whole[start : start + PART_BYTES] as part,
        ):
            return hashlib.sha256(part).digest()


def parts_sha256(paths: list[Path], threads: int | None = None) -> list[str]:
    """Each file's `parts` hash (see PART_BYTES), every part of every file on a pool of `threads` (default:
    the CPUs this process may use)."""
    jobs = [
        (i, start) for i, p in enumerate(paths) for start in range(0, max(p.stat().st_size, 1), PART_BYTES)
    ]
    workers = threads or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        digests = list(pool.map(lambda job: _part_digest(paths[job[0]], job[1]), jobs))
    out = [hashlib.sha256() for _ in paths]
    for (i, _), d in zip(jobs, digests, strict=True):
        out[i].update(d)
    return [h.hexdigest() for h in out]


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
    bytes: int | None = None  # the size; checked before any hash when given
    parts: str | None = None  # the parts hash (PART_BYTES); when given, it is what is checked, in parallel

    @classmethod
    def of(cls, path: Path, parts: str | None = None) -> FileEntry:
        return cls(sha256_file(path), path.stat().st_size, parts or parts_sha256([path])[0])

    def to_json(self) -> dict[str, Any]:
        optional = {"bytes": self.bytes, "parts": self.parts}
        return {"sha256": self.sha256} | {k: v for k, v in optional.items() if v is not None}


def files_of(directory: Path) -> dict[str, FileEntry]:
    """Every file in `directory` but the manifest, by name in sorted order: a bundle's `files`."""
    paths = [f for f in sorted(directory.iterdir()) if f.name != MANIFEST]
    return {f.name: FileEntry.of(f, parts) for f, parts in zip(paths, parts_sha256(paths), strict=True)}


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """A memory-mapped .npy file of the product side: its dtype (numpy's dtype.str) and shape."""

    file: str
    dtype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "dtype": self.dtype, "shape": list(self.shape)}


# What a bundle stores per product (schema 3), computed when it is built, so a server opens it memory-mapped
# (server/catalogue.py): role -> (dtype, shape), where n is the product count, L the label count, v the
# views, d the embedding dim, and None a size the other arrays fix. "|S" is fixed-width UTF-8 bytes.
PRODUCT_ARRAYS: dict[str, tuple[str, tuple[str | None, ...]]] = {
    "ids": ("|S", ("n",)),  # product ids in row order
    "sorted_ids": ("|S", ("n",)),  # the same, sorted: an id is found by binary search
    "sorted_rows": ("<i8", ("n",)),  # the row of each sorted id
    "categories": ("<i4", ("n",)),  # label index per row
    "title_offsets": ("<i8", ("n+1",)),  # row i's title is title_bytes[offsets[i]:offsets[i + 1]]
    "title_bytes": ("|u1", (None,)),  # the titles, UTF-8
    "word_indptr": ("<i8", ("n+1",)),  # relevance lexicon (server/featurize.py TitleLexicon)
    "word_ids": ("<i8", (None,)),
    "char_indptr": ("<i8", ("n+1",)),
    "char_ids": ("<i4", (None,)),
    "text_hash": ("<u8", ("n",)),
    "category_offsets": ("<i8", ("L+1",)),  # label c's rows are category_rows[offsets[c]:offsets[c + 1]]
    "category_rows": ("<i8", ("n",)),
    "exact_start": ("<i8", ("L",)),  # first exact_vectors row of label c's vectors, -1 if not stored
    "exact_vectors": ("<f2", (None, "d")),  # [rows x views, d]: small categories' vectors, contiguous
    # The same vectors in COARSE_DIMS principal directions: scanned first, the best few rescored in full.
    "coarse_projection": ("<f4", ("d", "c")),  # [d, c]: x @ projection, after subtracting coarse_mean
    "coarse_mean": ("<f4", ("d",)),
    # [rows x views, c], row for row with exact_vectors; float32 (the first schema 3 bundles wrote float16)
    "exact_coarse": ("<f4 or <f2", (None, "c")),
}
INDEX_SLOTS = "index_slots"
OPTIONAL_ARRAYS: dict[str, tuple[str, tuple[str | None, ...]]] = {
    # The index file's slot of each vector key (row x views + view): with it the server opens the index
    # without usearch's key lookups (a table in each process's private memory) and reads vectors from
    # the file's own block (server/runtime/index.py). Bundles before it lack it and keep the lookups.
    INDEX_SLOTS: ("<i8", ("n*v",)),
}
COARSE_DIMS = 64


def array_file(role: str) -> str:
    return f"products_{role}.npy"


def check_array_shapes(
    arrays: dict[str, ArraySpec], count: int, labels: int, dim: int, where: str, views: int = 1
) -> None:
    """Each array's dtype and shape as PRODUCT_ARRAYS (and OPTIONAL_ARRAYS, when present) state them;
    BundleError names the one at fault."""
    sizes = {
        "n": count,
        "n*v": count * views,
        "n+1": count + 1,
        "L": labels,
        "L+1": labels + 1,
        "d": dim,
        "c": min(COARSE_DIMS, dim),
    }
    missing = [role for role in PRODUCT_ARRAYS if role not in arrays]
    unknown = [role for role in arrays if role not in PRODUCT_ARRAYS and role not in OPTIONAL_ARRAYS]
    if missing or unknown:
        raise BundleError(f"{where}: arrays missing {missing}, unknown {unknown}")
    expected_arrays = PRODUCT_ARRAYS | {r: OPTIONAL_ARRAYS[r] for r in arrays if r in OPTIONAL_ARRAYS}
    for role, (dtype, shape) in expected_arrays.items():
        spec = arrays[role]
        ok_dtype = spec.dtype.startswith(dtype) if dtype == "|S" else spec.dtype in dtype.split(" or ")
        expected = tuple(sizes[s] if isinstance(s, str) else None for s in shape)
        ok_shape = len(spec.shape) == len(expected) and all(
            e is None or e == a for e, a in zip(expected, spec.shape, strict=True)
        )
        if not ok_dtype or not ok_shape:
            raise BundleError(
                f"{where}.{role}: {spec.file} is {spec.dtype}{list(spec.shape)}, expected {dtype}"
                f"{[s if s else '*' for s in shape]} with n={count}, v={views}, L={labels}, d={dim}"
            )
    if arrays["exact_coarse"].shape[0] != arrays["exact_vectors"].shape[0]:
        raise BundleError(
            f"{where}.exact_coarse: {arrays['exact_coarse'].shape[0]} rows, "
            f"exact_vectors has {arrays['exact_vectors'].shape[0]}"
        )


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
    # text_bags relevance: the graph that turns a title's n-gram ids into its bag, and every product's bag
    # ([products, bag width] float32, row for row with the product arrays).
    title_model: str | None = None
    title_bags: ArraySpec | None = None
    # Relevance only: the query model whose vector of the query its cosine feature takes (QUERY_VECTORS;
    # None: query_encoder, as every bundle before the choice).
    query_vector: str | None = None

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
            "query_vector": self.query_vector,
        }
        out |= {k: list(v) if isinstance(v, tuple) else v for k, v in optional.items() if v is not None}
        if self.title_model is not None:
            out["title_model"] = self.title_model
        if self.title_bags is not None:
            out["title_bags"] = self.title_bags.to_json()
        return out


@dataclass(frozen=True, slots=True)
class IndexComponent:
    """The usearch index (`views` vectors per product) and its row -> product map: the product arrays
    (schema 3, PRODUCT_ARRAYS) or, in schema 2 bundles, products.json."""

    file: str
    products: str | None
    description: str = ""
    metric: str = "cos"
    views: int = 1
    count: int | None = None  # products in the index
    arrays: dict[str, ArraySpec] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file}
        if self.products is not None:
            out["products"] = self.products
        out |= {"description": self.description, "metric": self.metric, "views": self.views}
        out["count"] = self.count
        if self.arrays is not None:
            out["arrays"] = {role: spec.to_json() for role, spec in self.arrays.items()}
        return out


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
    query_static: ModelComponent | None = None
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
