"""The artifact bundle, loaded: the manifest checked (server/manifest.py), then its runtimes opened.

A bundle is a directory holding manifest.json plus the files it lists. server/manifest.py reads and checks
the manifest itself; this module checks what only the files can tell (the ONNX graphs against the manifest
and against what the server feeds them, the index against the products) and opens the models, the
featurizer, the index, the product arrays (server/catalogue.py) and the rules. Every refusal is a BundleError
whose message names the file or field at fault. Only JSON, ONNX, tokenizer JSON, a usearch index and .npy
arrays (without pickle) are ever read from a bundle: nothing in it can execute code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from server.catalogue import ProductTable, from_products_json, open_array
from server.errors import FailedPrecondition
from server.featurize import (
    RELEVANCE_FEATURES,
    TEXT_BAGS_FEATURES,
    TEXT_QUERY_IDS,
    TEXT_RELEVANCE_FEATURES,
    TEXT_RELEVANCE_WIDTH,
    TEXT_TITLE_IDS,
    Featurizer,
    FeaturizerConfig,
)
from server.manifest import (
    CAPABILITIES,
    INDEX_SLOTS,
    MANIFEST,
    SCHEMA_VERSION,
    SEARCH_MODES,
    ArraySpec,
    BundleError,
    IndexComponent,
    Label,
    LexicalComponent,
    Manifest,
    ModelComponent,
    category_id,
    sha256_file,
)
from server.query_tokens import QueryTokenizer
from server.rules import GRADES, Rules, check_grades, parse_rules
from server.runtime.batcher import BatchPolicy
from server.runtime.index import ProductIndex
from server.runtime.lexical import LexicalIndex, file_names, impact_name
from server.runtime.onnx import OnnxModel, ThreadSettings
from server.runtime.pages import populate

# Training imports these from here; they live in server/manifest.py.
__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "Component",
    "Label",
    "Products",
    "category_id",
    "load_bundle",
    "sha256_file",
]


@dataclass(frozen=True, slots=True)
class Component:
    """A component as GetModelInfo reports it."""

    name: str
    file: str
    sha256: str
    description: str


Products = ProductTable
"""The id map of the index: row i of the index is ids[i] (server/catalogue.py)."""


class Bundle:
    """A validated, loaded bundle: the models, featurizer, index and metadata the services use."""

    def __init__(
        self,
        directory: Path,
        threads: ThreadSettings,
        batching: BatchPolicy | None = None,
        verify: bool = True,
    ) -> None:
        self.directory = directory
        self.manifest = m = Manifest.read(directory)
        if verify:
            m.verify_files(directory)
        self.version = m.bundle_version
        self.schema_version = m.schema_version
        self.created_at = m.created_at
        self.code_version = m.code_version
        self.embedding_dim = m.embedding_dim
        self.evaluation: dict[str, Any] = m.evaluation
        self.labels: tuple[Label, ...] = m.labels
        self.capabilities = m.components.capabilities()
        try:
            config = FeaturizerConfig.from_json(m.featurizer.config)
            self.featurizer = Featurizer(directory / m.featurizer.tokenizer, config)
        except Exception as e:  # a bad config or an unreadable tokenizer.json
            raise BundleError(f"featurizer: {e}") from e

        # What the server feeds each model and reads back: input name -> (dtype, rank, static last dim),
        # and the output's (dtype, width).
        n_labels, dim = len(self.labels), self.embedding_dim
        # Which relevance student the bundle holds: the MLP over four features (bundles before the text
        # student say no kind) or the one that also reads the query's and title's n-grams.
        relevance = m.components.relevance
        self.relevance_kind = (relevance.kind or "feature_mlp") if relevance is not None else ""
        # text_bags: the title model, whose bag width fixes the scoring graph's row width.
        self.relevance_titles: OnnxModel | None = None
        self.title_bags: np.ndarray | None = None
        relevance_inputs: dict[str, tuple[Any, ...]]
        if self.relevance_kind == "text_bags":
            assert relevance is not None and relevance.title_model is not None
            self.relevance_titles = _open_model(
                directory, "relevance_titles", replace(relevance, file=relevance.title_model), threads, None
            )
            bag_width = _title_model_width(self.relevance_titles, relevance.title_model)
            n_features = len(RELEVANCE_FEATURES) + TEXT_QUERY_IDS + bag_width
            relevance_inputs = {
                "query": ("float32", 2, 2 * TEXT_QUERY_IDS),
                "features": ("float32", 2, n_features),
            }
        else:
            n_features = (
                TEXT_RELEVANCE_WIDTH if self.relevance_kind == "text_mlp" else len(RELEVANCE_FEATURES)
            )
            relevance_inputs = {"features": ("float32", 2, n_features)}
        self.relevance_width = n_features
        # The grades the relevance model outputs, worst to best: the one list the rules and answers use.
        self.grades: tuple[str, ...] = _relevance_grades(relevance) if relevance is not None else GRADES
        expected = {
            "intent": ({"ids": ("int64", 2)}, ("float32", n_labels)),
            "query_encoder": ({"ids": ("int64", 2)}, ("float32", dim)),
            "query_student": ({"input_ids": ("int64", 2)}, ("float32", dim)),
            "query_static": ({"input_ids": ("int64", 2)}, ("float32", dim)),
            "relevance": (relevance_inputs, ("float32", len(self.grades))),
        }
        self.components: dict[str, Component] = {}
        models: dict[str, OnnxModel] = {}
        for name, comp in m.components.models().items():
            models[name] = _open_model(directory, name, comp, threads, batching)
            inputs, (out_dtype, out_width) = expected[name]
            _check_signature(name, comp, models[name], inputs, out_dtype, out_width)
            self.components[name] = Component(name, comp.file, m.files[comp.file].sha256, comp.description)
        self.intent = models.get("intent")
        self.query_encoder = models.get("query_encoder")
        self.relevance = models.get("relevance")
        # The transformer query tower, fed word pieces of the featurizer's own tokenizer.json.
        self.query_student = models.get("query_student")
        self.query_tokens = _query_tokens(directory, m, "query_student")
        # The static word-piece model (the relevance cosine's query model when trained on it), fed the
        # same tokenizer's word pieces.
        self.query_static = models.get("query_static")
        self.static_tokens = _query_tokens(directory, m, "query_static")
        if m.components.relevance is not None:
            _check_relevance_names(m.components.relevance, self.relevance_kind)
        # The query model whose vector the relevance cosine feature takes, as it was trained.
        self.relevance_query_vector = (relevance.query_vector if relevance else None) or "query_encoder"
        if self.relevance_query_vector != "query_encoder" and self.relevance_query_vector not in models:
            raise BundleError(
                f"components.relevance.query_vector: {self.relevance_query_vector!r}, but the bundle has "
                f"no {self.relevance_query_vector}"
            )

        self.index: ProductIndex | None = None
        self.products: Products | None = None
        if m.components.index is not None:
            self.index, self.products = self._open_index(m.components.index)
        self.lexical: LexicalIndex | None = None
        self.lexical_spec: LexicalComponent | None = m.components.lexical
        if self.lexical_spec is not None and self.products is not None:
            self.lexical = self._open_lexical(self.lexical_spec, len(self.products.ids))
        self.search_modes: tuple[str, ...] = ()
        self.search_default_mode = ""
        if "retrieval" in self.capabilities:
            self.search_modes = SEARCH_MODES if self.lexical is not None else ("dense",)
            self.search_default_mode = self.lexical_spec.default_mode if self.lexical_spec else "dense"
        # Relevance over candidates given by id reads the product side of its features from here.
        self.lexicon = (
            self.products.lexicon(self.featurizer)
            if self.products is not None and self.relevance is not None
            else None
        )
        if self.relevance_titles is not None and self.products is not None:
            assert relevance is not None and relevance.title_bags is not None
            width = n_features - len(RELEVANCE_FEATURES) - TEXT_QUERY_IDS
            self.title_bags = _open_title_bags(directory, relevance.title_bags, len(self.products), width)

        rules_file = m.components.rules.file
        try:
            raw_rules = json.loads((directory / rules_file).read_text(encoding="utf-8"))
            self.rules: Rules = parse_rules(raw_rules, [label.path for label in self.labels], self.grades)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise BundleError(f"{rules_file}: {e}") from e

    def _open_index(self, spec: IndexComponent) -> tuple[ProductIndex, Products]:
        index_file, products_file, views = spec.file, spec.products, spec.views
        self.components["index"] = Component(
            "index", index_file, self.manifest.files[index_file].sha256, spec.description
        )
        slots = None
        if spec.arrays is not None and INDEX_SLOTS in spec.arrays:  # its shape is checked with the others
            slots = open_array(self.directory, spec.arrays[INDEX_SLOTS])
        try:
            index = ProductIndex(self.directory / index_file, views, slots)
        except Exception as e:
            where = f" with {spec.arrays[INDEX_SLOTS].file}" if slots is not None and spec.arrays else ""
            raise BundleError(f"{index_file}: cannot open the usearch index{where}: {e}") from e
        if index.dim != self.embedding_dim:
            raise BundleError(
                f"{index_file}: index dimension {index.dim} != embedding_dim {self.embedding_dim}"
            )
        if index.metric != "cos":
            raise BundleError(f"{index_file}: index metric must be cos, got {index.metric}")
        if spec.arrays is not None:
            if len(index) != (spec.count or 0) * views:
                raise BundleError(
                    f"{index_file}: index holds {len(index)} vectors but the product arrays list "
                    f"{spec.count} products with {views} view(s) each"
                )
            self.manifest.check_arrays()
            products = ProductTable.open(self.directory, spec.arrays, len(self.labels), views)
        else:  # schema 2: products.json, turned into the same arrays here
            assert products_file is not None
            products = from_products_json(
                self.directory / products_file, len(self.labels), self.featurizer, index.all_views
            )
        products_file = products_file or "the product arrays"
        if len(index) != len(products.ids) * views:
            raise BundleError(
                f"{index_file}: index holds {len(index)} vectors but {products_file} "
                f"lists {len(products.ids)} products with {views} view(s) each"
            )
        if spec.count != len(products.ids):
            raise BundleError(f"components.index.count: {spec.count} != {len(products.ids)}")
        return index, products

    def _open_lexical(self, spec: LexicalComponent, num_products: int) -> LexicalIndex:
        prefix = spec.vocabulary.removesuffix("_vocab.json")
        if spec.files() != file_names(prefix):
            raise BundleError(
                f"components.lexical: files {list(spec.files())} are not {list(file_names(prefix))}"
            )
        try:
            # The impact order is optional (bundles before it lack it), but used only when the manifest
            # lists it, so its checksum was verified with the rest.
            impact = impact_name(prefix) in self.manifest.files
            index = LexicalIndex.open(self.directory, num_products, prefix, impact=impact)
        except (OSError, ValueError) as e:
            raise BundleError(f"components.lexical: {e}") from e
        sha = self.manifest.files[spec.weights].sha256
        self.components["lexical"] = Component("lexical", spec.weights, sha, spec.description)
        return index

    def query_model(self) -> tuple[OnnxModel, Callable[[list[str]], np.ndarray]]:
        """The model that embeds queries for Search and EmbedQuery, and how texts become its input: the
        transformer student's word pieces when the bundle has one, else the hashed n-gram ids."""
        if self.query_student is not None and self.query_tokens is not None:
            return self.query_student, self.query_tokens.ids
        assert self.query_encoder is not None
        return self.query_encoder, self.featurizer.batch_ids

    def relevance_query_model(self) -> tuple[OnnxModel, Callable[[list[str]], np.ndarray]]:
        """The model ScoreRelevance's cosine feature embeds the query with (components.relevance.query_vector,
        what the relevance model was trained on), and how texts become its input."""
        which = self.relevance_query_vector
        if which == "query_student":
            return self.query_model()
        if which == "query_static":
            assert self.query_static is not None and self.static_tokens is not None
            return self.query_static, self.static_tokens.ids
        assert self.query_encoder is not None
        return self.query_encoder, self.featurizer.batch_ids

    def require(self, capability: str) -> None:
        """Raises FailedPrecondition when this bundle was trained without what `capability` needs."""
        if capability not in self.capabilities:
            raise FailedPrecondition(
                f"bundle {self.version} cannot serve {capability}: it has no "
                f"{', '.join(n for n in CAPABILITIES[capability] if n not in self.components)} "
                "(trained without a product catalogue?)"
            )

    def warm_up(self) -> None:
        """One call through every model and the index, and every page of the bundle's memory-mapped files
        into this process's page tables (server/runtime/pages.py), so no request pays lazy initialisation."""
        populate(self.directory)
        ids = self.featurizer.batch_ids(["warm up query"])
        if self.intent is not None:
            self.intent.run({"ids": ids})
        if self.query_encoder is not None and self.index is not None:
            vector = self.query_encoder.run({"ids": ids})[0]
            self.index.search(vector, min(10, len(self.products.ids)))
        if self.query_student is not None and self.query_tokens is not None:
            self.query_student.run({"input_ids": self.query_tokens.ids(["warm up query"])})
        if self.query_static is not None and self.static_tokens is not None:
            self.query_static.run({"input_ids": self.static_tokens.ids(["warm up query"])})
        if self.lexical is not None:
            self.lexical.search("warm up query", 10)
        if self.relevance is not None:
            features = np.zeros((1, self.relevance_width), dtype=np.float32)
            if self.relevance_titles is not None:
                self.relevance_titles.run({"title_ids": np.zeros((1, TEXT_TITLE_IDS), dtype=np.float32)})
                query = np.zeros((1, 2 * TEXT_QUERY_IDS), dtype=np.float32)
                self.relevance.run({"query": query, "features": features})
            else:
                self.relevance.run({"features": features})


def load_bundle(
    directory: str | Path,
    threads: ThreadSettings | None = None,
    batching: BatchPolicy | None = None,
    verify: bool = True,
) -> Bundle:
    """Validates and opens the bundle at `directory`; raises BundleError naming what is wrong. `verify`
    False skips hashing the files: for a heavy worker, whose serving process checks the same directory."""
    path = Path(directory)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle directory does not exist")
    return Bundle(path, threads or ThreadSettings(), batching, verify)


def _open_model(
    directory: Path, name: str, comp: ModelComponent, threads: ThreadSettings, batching: BatchPolicy | None
) -> OnnxModel:
    try:
        return OnnxModel(directory / comp.file, name, threads, batching)
    except Exception as e:
        raise BundleError(f"{comp.file}: onnxruntime cannot load it: {e}") from e


def _query_tokens(directory: Path, m: Manifest, name: str) -> QueryTokenizer | None:
    """The word-piece tokenizer of component `name` (a TOKEN_KINDS model), when the bundle has one."""
    comp = getattr(m.components, name)
    if comp is None:
        return None
    try:
        return QueryTokenizer(directory / m.featurizer.tokenizer, comp.max_tokens or 0)
    except Exception as e:
        raise BundleError(f"components.{name}: {e}") from e


def _check_signature(
    name: str,
    comp: ModelComponent,
    model: OnnxModel,
    inputs: dict[str, tuple[Any, ...]],
    out_dtype: str,
    out_width: int,
) -> None:
    """The manifest, the ONNX graph and what the server feeds must all agree."""
    actual_in, actual_out = model.signature()
    where = f"components.{name}"
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


def _relevance_grades(relevance: ModelComponent) -> tuple[str, ...]:
    """The manifest's grade set, checked (server/rules.py check_grades)."""
    try:
        return check_grades(relevance.grades or ())
    except ValueError as e:
        raise BundleError(f"components.relevance.grades: {e}") from e


def _check_relevance_names(relevance: ModelComponent, kind: str) -> None:
    """The feature columns the model was trained on are the ones this server computes for its kind."""
    names = None if relevance.feature_names is None else list(relevance.feature_names)
    expected = list(
        {"text_mlp": TEXT_RELEVANCE_FEATURES, "text_bags": TEXT_BAGS_FEATURES}.get(kind, RELEVANCE_FEATURES)
    )
    if names != expected:
        raise BundleError(
            f"components.relevance.feature_names: a {kind} relevance model reads {expected}, "
            f"the manifest says {names}"
        )


def _title_model_width(model: OnnxModel, file: str) -> int:
    """A text_bags title model reads title_ids float32 [batch, TEXT_TITLE_IDS] and gives one bag per row."""
    inputs, outputs = model.signature()
    where = "components.relevance.title_model"
    if [(i.name, i.dtype, i.shape[-1]) for i in inputs] != [("title_ids", "float32", TEXT_TITLE_IDS)]:
        raise BundleError(
            f"{where}: {file} must read title_ids float32[batch, {TEXT_TITLE_IDS}], "
            f"reads {[(i.name, i.dtype, list(i.shape)) for i in inputs]}"
        )
    width = outputs[0].shape[-1] if len(outputs[0].shape) == 2 else None
    if outputs[0].dtype != "float32" or not isinstance(width, int) or width < 1:
        raise BundleError(f"{where}: {file} must give float32[batch, width], gives {outputs[0].shape}")
    return width


def _open_title_bags(directory: Path, spec: ArraySpec, products: int, width: int) -> np.ndarray:
    """Every product's title bag, memory-mapped: float32 [products, the title model's width]."""
    where = "components.relevance.title_bags"
    if spec.dtype != "<f4" or spec.shape != (products, width):
        raise BundleError(
            f"{where}: {spec.file} is declared {spec.dtype}{list(spec.shape)}, expected "
            f"<f4{[products, width]} (one bag per product, as wide as the title model's output)"
        )
    try:
        array = np.load(directory / spec.file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{where}: {spec.file} cannot load as .npy without pickle ({e})") from e
    if array.dtype.str != spec.dtype or array.shape != spec.shape:
        raise BundleError(
            f"{where}: {spec.file} holds {array.dtype}{list(array.shape)}, "
            f"the manifest says {spec.dtype}{list(spec.shape)}"
        )
    return array.view(np.ndarray)
