"""Catalogue loaders: the embedded synthetic default, or a CSV/JSONL file of products with category paths."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from training.data.catalogue import Catalogue, Product
from training.data.columns import GUESS, Columns, first, keys, optional_keys
from training.data.synthetic import generate_catalogue

TITLE_KEYS = ("title", "product_name", "name", "product_title")
CATEGORY_KEYS = ("category", "category_path", "product_class")
ID_KEYS = ("id", "product_id")
BRAND_KEYS = ("brand", "product_brand")


def load_catalogue(data: Path | None, num_products: int, seed: int, columns: Columns = GUESS) -> Catalogue:
    """`data` None means the embedded synthetic catalogue; otherwise a .csv, .tsv or .jsonl product file.

    Columns (first non-empty wins) unless `columns` names them: title|product_name|name|product_title,
    category|category_path|product_class (levels joined by ">", ">>" or "/"), and optionally id|product_id
    and brand|product_brand.
    """
    if data is None:
        return generate_catalogue(num_products, seed)
    header, rows = read_table(data)
    title_keys = keys(header, columns.title, TITLE_KEYS, "title", data)
    category_keys = keys(header, columns.category, CATEGORY_KEYS, "category", data)
    id_keys = optional_keys(header, columns.id, ID_KEYS, "id", data)
    brand_keys = tuple(k for k in BRAND_KEYS if k in header)
    products = []
    for n, row in enumerate(rows):
        title = first(row, title_keys)
        category = category_path(first(row, category_keys))
        if not title or not category:
            empty = title_keys if not title else category_keys
            raise ValueError(f"--data {data}: row {n + 1} has no value in {', '.join(empty)}")
        pid = first(row, id_keys) or f"P{n:07d}"
        products.append(Product(id=pid, title=title, category=category, brand=first(row, brand_keys)))
    if not products:
        raise ValueError(f"--data {data}: no products")
    return Catalogue(products=tuple(products), categories=tuple(sorted({p.category for p in products})))


def category_path(raw: str) -> str:
    """A category path with levels joined by " > ". Files write ">", " >> " or "/" between levels; empty
    levels (the middle of ">>") are dropped."""
    return " > ".join(p.strip() for p in raw.replace("/", ">").split(">") if p.strip())


def read_header(data: Path) -> list[str]:
    """The column names of a data file, without reading a CSV's rows."""
    if data.suffix in (".csv", ".tsv") and data.is_file():
        with data.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if data.suffix == ".tsv" else ",").fieldnames or ())
    return read_table(data)[0]


def read_table(data: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a .csv, .tsv or .jsonl file (a JSONL header: every key any row has)."""
    if not data.is_file():
        raise FileNotFoundError(f"--data {data}: no such file")
    if data.suffix == ".jsonl":
        rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
        return list(dict.fromkeys(k for row in rows for k in row)), rows
    if data.suffix in (".csv", ".tsv"):
        with data.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if data.suffix == ".tsv" else ",")
            rows = list(reader)
            return list(reader.fieldnames or ()), rows
    raise ValueError(f"--data {data}: expected a .csv, .tsv or .jsonl file")
