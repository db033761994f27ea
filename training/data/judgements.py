"""Catalogues that come with graded relevance judgements: WANDS (Wayfair) and ESCI (Amazon) layouts, and a
single pairs file of (query, product title, label) rows such as ESCI's joined examples.

Grades come from the data, each an index into its loader's grade set, worst to best (server/rules.py):
WANDS's three (irrelevant, partial, exact) and ESCI's four (irrelevant, complement, substitute, exact). A
pairs file has ESCI's four when a label says Substitute or Complement, else the three.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.rules import ESCI_GRADES, GRADES
from training.data.catalogue import Catalogue, Product
from training.data.columns import GUESS, Columns, first, keys, optional_keys
from training.data.loaders import (
    BRAND_KEYS,
    CATEGORY_KEYS,
    ID_KEYS,
    TITLE_KEYS,
    category_path,
    read_header,
    read_table,
)

WANDS_FILES = ("product.csv", "query.csv", "label.csv")
ESCI_EXAMPLES = "shopping_queries_dataset_examples"
ESCI_PRODUCTS = "shopping_queries_dataset_products"
# Label as written (lower-cased) -> grade name.
_WANDS_LABELS = {name: name for name in GRADES}
_ESCI_LABELS = {
    **{name[0]: name for name in ESCI_GRADES},
    **{name: name for name in ESCI_GRADES},
}
_PAIR_LABELS = {**_ESCI_LABELS, **_WANDS_LABELS}
QUERY_KEYS = ("query",)
LABEL_KEYS = ("esci_label", "label")
UNKNOWN_CATEGORY = "Unknown"
"""ESCI has no categories: every product gets this one, so intent cannot be trained from ESCI alone."""


@dataclass(frozen=True, slots=True)
class Judgement:
    query: str
    product_id: str
    grade: int
    """Index into the JudgedCatalogue's grades."""


@dataclass(frozen=True, slots=True)
class JudgedCatalogue:
    catalogue: Catalogue
    judgements: tuple[Judgement, ...]
    grades: tuple[str, ...] = GRADES
    """The data's grade set, worst to best."""


def is_wands_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in WANDS_FILES)


def is_esci_dir(path: Path) -> bool:
    return _find(path, ESCI_EXAMPLES) is not None and _find(path, ESCI_PRODUCTS) is not None


def load_wands(directory: Path) -> JudgedCatalogue:
    """product.csv (product_id, product_name, product_class, category hierarchy with " / " levels),
    query.csv (query_id, query) and label.csv (query_id, product_id, label Exact/Partial/Irrelevant); all
    tab separated with headers."""
    products = []
    for row in _tsv(directory / "product.csv"):
        name = (row.get("product_name") or "").strip()
        if not name:
            continue
        hierarchy = (row.get("category hierarchy") or "").strip()
        category = " > ".join(p.strip() for p in hierarchy.split(" / ") if p.strip()) if hierarchy else ""
        category = category or (row.get("product_class") or "").strip() or UNKNOWN_CATEGORY
        products.append(Product(str(row["product_id"]).strip(), name, category, ""))
    known = {p.id for p in products}
    queries = {str(r["query_id"]).strip(): r["query"].strip() for r in _tsv(directory / "query.csv")}
    judgements = []
    for n, row in enumerate(_tsv(directory / "label.csv"), start=2):
        qid, pid = str(row["query_id"]).strip(), str(row["product_id"]).strip()
        name = _WANDS_LABELS.get((row.get("label") or "").strip().lower())
        if qid not in queries:
            raise ValueError(f"{directory / 'label.csv'}:{n}: unknown query_id {qid!r}")
        if pid not in known:
            continue  # a product whose row had no name was skipped above
        if name is None:
            raise ValueError(
                f"{directory / 'label.csv'}:{n}: label {row.get('label')!r} is not Exact/Partial/Irrelevant"
            )
        judgements.append(Judgement(queries[qid], pid, GRADES.index(name)))
    return JudgedCatalogue(_catalogue(products, directory), tuple(judgements), GRADES)


def load_esci(directory: Path, locale: str | None = "us") -> JudgedCatalogue:
    """The ESCI examples file (query, product_id, esci_label, optional product_locale) and products file
    (product_id, product_title, optional product_brand), as .csv or .jsonl."""
    products = []
    for row in _rows(_find(directory, ESCI_PRODUCTS)):
        if locale and row.get("product_locale", locale) != locale:
            continue
        title = (row.get("product_title") or "").strip()
        if title:
            products.append(
                Product(str(row["product_id"]), title, UNKNOWN_CATEGORY, str(row.get("product_brand") or ""))
            )
    known = {p.id for p in products}
    judgements = []
    examples = _find(directory, ESCI_EXAMPLES)
    for n, row in enumerate(_rows(examples), start=2):
        if locale and row.get("product_locale", locale) != locale:
            continue
        name = _ESCI_LABELS.get(str(row.get("esci_label", "")).strip().lower())
        if name is None:
            raise ValueError(f"{examples}:{n}: esci_label {row.get('esci_label')!r} is not one of E/S/C/I")
        if str(row["product_id"]) in known:
            judgements.append(
                Judgement(str(row["query"]).strip(), str(row["product_id"]), ESCI_GRADES.index(name))
            )
    return JudgedCatalogue(_catalogue(products, directory), tuple(judgements), ESCI_GRADES)


def is_pairs_file(path: Path, columns: Columns = GUESS) -> bool:
    """A data file of judged (query, product) rows rather than a catalogue: it has a query column, or the
    user named a query or label column."""
    if columns.query is not None or columns.label is not None:
        return True
    return any(k in read_header(path) for k in QUERY_KEYS)


def load_pairs(path: Path, columns: Columns = GUESS) -> JudgedCatalogue:
    """One .csv/.tsv/.jsonl file of (query, product, label) rows, e.g. ESCI's examples joined with product
    text. Columns as in a catalogue file, plus query and label (E/S/C/I or Exact/Partial/Irrelevant); the
    category is optional (UNKNOWN_CATEGORY without one). A product in several rows is kept once. The grade
    set is ESCI's four when any label is Substitute or Complement, else the three; both Partial and one of
    those in one file is refused."""
    header, rows = read_table(path)
    query_keys = keys(header, columns.query, QUERY_KEYS, "query", path)
    label_keys = keys(header, columns.label, LABEL_KEYS, "label", path)
    title_keys = keys(header, columns.title, TITLE_KEYS, "title", path)
    id_keys = optional_keys(header, columns.id, ID_KEYS, "id", path)
    category_keys = optional_keys(header, columns.category, CATEGORY_KEYS, "category", path)
    brand_keys = tuple(k for k in BRAND_KEYS if k in header)
    products: dict[str, Product] = {}
    ids_by_title: dict[str, str] = {}
    judged: list[tuple[str, str, str]] = []  # (query, product id, grade name)
    for n, row in enumerate(rows, start=1):
        query, title, label = first(row, query_keys), first(row, title_keys), first(row, label_keys)
        if not query or not title:
            continue
        name = _PAIR_LABELS.get(label.lower())
        if name is None:
            raise ValueError(f"{path}: row {n}: label {label!r} is not E/S/C/I or Exact/Partial/Irrelevant")
        # Without an id column, rows with the same title are the same product.
        pid = first(row, id_keys) or ids_by_title.setdefault(title, f"P{len(ids_by_title):07d}")
        category = category_path(first(row, category_keys)) or UNKNOWN_CATEGORY
        products.setdefault(pid, Product(pid, title, category, first(row, brand_keys)))
        judged.append((query, pid, name))
    names = {name for _, _, name in judged}
    grades = ESCI_GRADES if names & {"substitute", "complement"} else GRADES
    if unknown := sorted(names - set(grades)):
        raise ValueError(f"{path}: labels mix ESCI's grades {list(ESCI_GRADES)} with {unknown}")
    judgements = tuple(Judgement(q, pid, grades.index(name)) for q, pid, name in judged)
    return JudgedCatalogue(_catalogue(list(products.values()), path), judgements, grades)


def _catalogue(products: list[Product], directory: Path) -> Catalogue:
    if not products:
        raise ValueError(f"{directory}: no products")
    return Catalogue(tuple(products), tuple(sorted({p.category for p in products})))


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".jsonl", ".parquet"):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    return None


def _rows(path: Path | None) -> Iterator[dict[str, str]]:
    if path is None:
        raise FileNotFoundError("ESCI directory without examples or products file")
    if path.suffix == ".parquet":
        raise ValueError(f"{path}: parquet is not read here; convert it to CSV or JSONL first")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            yield from (json.loads(line) for line in f if line.strip())
    else:
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)


def _tsv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f, delimiter="\t")
