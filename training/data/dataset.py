"""What `--data` points at, turned into one shape the pipeline trains from.

Accepted inputs: nothing (the embedded synthetic catalogue), a product catalogue file (.csv/.tsv/.jsonl), a
pairs file of judged (query, product title, label) rows, a WANDS-style or ESCI-style directory (catalogue
plus graded judgements), or a taxonomy-only directory (classes.txt and optional queries.tsv: the cold start
of a new store). A taxonomy-only run may borrow a product catalogue for pre-training (`catalogue`), whose
categories are aligned to the labels by leaf name. Columns named differently from the loaders' guesses are
given as `Columns` (the --*-column flags).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.rules import GRADES
from training.data.catalogue import Catalogue
from training.data.columns import GUESS, Columns
from training.data.judgements import (
    JudgedCatalogue,
    Judgement,
    is_esci_dir,
    is_pairs_file,
    is_wands_dir,
    load_esci,
    load_pairs,
    load_wands,
)
from training.data.loaders import load_catalogue
from training.data.synthetic import generate_catalogue
from training.data.taxonomy import LabelledQuery, is_taxonomy_dir, label_at_level, load_taxonomy


@dataclass
class TrainingData:
    source: str
    labels: list[str]
    """The intent label set (category paths at the chosen level)."""
    descriptions: dict[str, str] = field(default_factory=dict)
    catalogue: Catalogue | None = None
    """The product side (retrieval, relevance, catalogue pre-training); None for taxonomy only."""
    product_labels: np.ndarray | None = None
    """Label index of each catalogue product, -1 where the product's category is not a label."""
    serves_products: bool = True
    """False when the catalogue was only borrowed for pre-training (taxonomy-only data)."""
    queries: list[LabelledQuery] = field(default_factory=list)
    """Real queries, with a label and a split where known."""
    judgements: list[Judgement] = field(default_factory=list)
    grades: tuple[str, ...] = GRADES
    """The relevance grade set, worst to best: the judgements' where the data has them (ESCI's four for
    ESCI-style data), else the three that the synthetic pairs are graded with."""
    train_rows: list[int] = field(default_factory=list)
    heldout_rows: list[int] = field(default_factory=list)
    """Catalogue rows whose title substrings are kept out of training (JD protocol evaluation)."""

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.catalogue.products] if self.catalogue else []

    def label_of(self, label: str | None) -> int:
        return self.labels.index(label) if label in self.labels else -1

    def real(self, split: str) -> tuple[list[str], np.ndarray]:
        """Real queries of a split and their label indices (-1 = unknown class)."""
        rows = [q for q in self.queries if q.split == split]
        return [q.text for q in rows], np.array([self.label_of(q.label) for q in rows], dtype=np.int64)


SYNTHETIC = "synthetic"
"""TrainingData.source of the embedded catalogue."""
SOURCE_KINDS = ("taxonomy", "wands", "esci", "pairs")
"""The prefixes of TrainingData.source ("KIND:PATH", `kind_source`) for data that is not a plain catalogue
file; a catalogue file's source is its bare path."""


def kind_source(kind: str, path: Path) -> str:
    """TrainingData.source of data of `kind` (one of SOURCE_KINDS) read from `path`; source_path reads it."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"source kind {kind!r}: not one of {', '.join(SOURCE_KINDS)}")
    return f"{kind}:{path}"


def source_path(source: str) -> Path | None:
    """The file or directory a TrainingData.source (the manifest's training.data) names; None for the embedded
    synthetic catalogue."""
    if source in ("", SYNTHETIC):
        return None
    kind, sep, rest = source.partition(":")
    return Path(rest) if sep and kind in SOURCE_KINDS else Path(source)


def load_training_data(
    path: Path | None,
    num_products: int,
    heldout_fraction: float,
    seed: int,
    label_level: int | None = None,
    columns: Columns = GUESS,
) -> TrainingData:
    if path is None:
        columns.only((), "the embedded synthetic catalogue (no --data)")
        data = _from_catalogue(SYNTHETIC, generate_catalogue(num_products, seed), label_level)
    elif path.is_dir() and is_taxonomy_dir(path):
        columns.only(("query", "category"), f"a taxonomy directory ({path}/queries.tsv has queries only)")
        tax = load_taxonomy(path, label_level, columns)
        data = TrainingData(
            source=kind_source("taxonomy", path),
            labels=list(tax.labels),
            descriptions=dict(tax.descriptions),
            queries=list(tax.queries),
        )
        # Catalogue pre-training without a catalogue of one's own: the embedded synthetic one (half the
        # preset's size: it only lends text), its categories aligned to the labels by leaf name; products
        # of other categories stay unlabelled and get the teacher's labels.
        _borrow_catalogue(data, generate_catalogue(num_products // 2, seed))
    elif path.is_dir() and is_wands_dir(path):
        columns.only((), f"a WANDS directory ({path}: fixed columns)")
        data = _from_judged(kind_source("wands", path), load_wands(path), label_level)
    elif path.is_dir() and is_esci_dir(path):
        columns.only((), f"an ESCI directory ({path}: fixed columns)")
        data = _from_judged(kind_source("esci", path), load_esci(path), label_level)
    elif path.is_file() and is_pairs_file(path, columns):
        data = _from_judged(kind_source("pairs", path), load_pairs(path, columns), label_level)
    elif path.is_file():
        columns.only(("title", "category", "id"), f"a catalogue file ({path} has no query column)")
        data = _from_catalogue(str(path), load_catalogue(path, num_products, seed, columns), label_level)
    else:
        raise FileNotFoundError(
            f"--data {path}: expected a catalogue file (.csv/.tsv/.jsonl), or a directory with classes.txt "
            "(taxonomy only), WANDS files (product.csv, query.csv, label.csv) or ESCI files"
        )
    if data.catalogue is not None:
        rows = list(range(len(data.catalogue.products)))
        random.Random(seed).shuffle(rows)
        n_heldout = max(1, int(len(rows) * heldout_fraction))
        data.heldout_rows, data.train_rows = sorted(rows[:n_heldout]), sorted(rows[n_heldout:])
    return data


def _from_catalogue(source: str, catalogue: Catalogue, label_level: int | None) -> TrainingData:
    paths = [label_at_level(p.category, label_level) for p in catalogue.products]
    labels = sorted(set(paths))
    index = {label: i for i, label in enumerate(labels)}
    return TrainingData(
        source=source,
        labels=labels,
        catalogue=catalogue,
        product_labels=np.array([index[p] for p in paths], dtype=np.int64),
    )


def _from_judged(source: str, judged: JudgedCatalogue, label_level: int | None) -> TrainingData:
    data = _from_catalogue(source, judged.catalogue, label_level)
    data.judgements = list(judged.judgements)
    data.grades = judged.grades
    return data


def leaf(path: str) -> str:
    return path.split(" > ")[-1].strip().lower()


def _borrow_catalogue(data: TrainingData, catalogue: Catalogue) -> None:
    by_leaf = {leaf(label): i for i, label in enumerate(data.labels)}
    data.catalogue = catalogue
    data.serves_products = False
    data.product_labels = np.array([by_leaf.get(leaf(p.category), -1) for p in catalogue.products])
