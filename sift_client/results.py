"""What the calls return: typed dataclasses, free of protobuf. Enums come back as short lower-case names
("model" / "rule", "exact" / "partial" / "irrelevant")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    path: str
    probability: float


@dataclass(frozen=True, slots=True)
class Intent:
    """ClassifyIntent: categories most probable first; `source` "model" or "rule" (then `rule` names it)."""

    categories: list[Category]
    source: str
    rule: str
    model_version: str


@dataclass(frozen=True, slots=True)
class Hit:
    product_id: str
    score: float  # cosine (dense), BM25 (lexical) or fused rank score (hybrid); higher is nearer
    category: str


@dataclass(frozen=True, slots=True)
class Hits:
    """Search: nearest first."""

    hits: list[Hit]
    model_version: str


@dataclass(frozen=True, slots=True)
class Embedding:
    """EmbedQuery: the L2-normalized query vector."""

    vector: list[float]
    model_version: str


@dataclass(frozen=True, slots=True)
class Score:
    score: float  # in [0, 1]
    grade: str  # "exact", "partial" or "irrelevant": the nearest of the original three to grade_name
    source: str  # "model" or "rule"
    rule: str
    grade_name: str = ""  # the bundle's own grade (one of ModelInfo.grades); "" from older servers


@dataclass(frozen=True, slots=True)
class Relevance:
    """ScoreRelevance: one score per candidate, in request order."""

    scores: list[Score]
    model_version: str


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    file: str
    sha256: str
    description: str


@dataclass(frozen=True, slots=True)
class Label:
    id: str
    path: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    bundle_version: str
    schema_version: int
    created_at: str
    code_version: str
    components: list[Component]
    labels: list[Label]  # the intent label set, in model output order
    embedding_dim: int
    num_products: int
    evaluation: dict[str, Any]
    search_modes: list[str]
    search_default_mode: str
    grades: tuple[str, ...] = ()  # relevance grades, worst to best; empty without relevance, or older servers


@dataclass(frozen=True, slots=True)
class Reload:
    bundle_version: str
    previous_version: str
    load_seconds: float
