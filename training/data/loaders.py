"""Catalogue loaders: the embedded synthetic default, or a CSV/JSONL file of products with category paths."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from training.data.catalogue import Catalogue, Product
from training.data.synthetic import generate_catalogue

_TITLE_KEYS = ("title", "product_name", "name")
_CATEGORY_KEYS = ("category", "category_path", "product_class")
_ID_KEYS = ("id", "product_id")


def load_catalogue(data: Path | None, num_products: int, seed: int) -> Catalogue:
    """`data` None means the embedded synthetic catalogue; otherwise a .csv, .tsv or .jsonl product file.

    Columns (first match wins): title|product_name|name, category|category_path|product_class (levels joined
    by " > " or "/"), and optionally id|product_id.
    """
    if data is None:
        return generate_catalogue(num_products, seed)
    if not data.is_file():
        raise FileNotFoundError(f"--data {data}: no such file")
    if data.suffix == ".jsonl":
        rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif data.suffix in (".csv", ".tsv"):
        with data.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if data.suffix == ".tsv" else ","))
    else:
        raise ValueError(f"--data {data}: expected a .csv, .tsv or .jsonl catalogue")
    products = []
    for n, row in enumerate(rows):
        title = _pick(row, _TITLE_KEYS, data, n)
        category = " > ".join(
            p.strip() for p in _pick(row, _CATEGORY_KEYS, data, n).replace("/", ">").split(">")
        )
        pid = next((str(row[k]) for k in _ID_KEYS if row.get(k)), f"P{n:07d}")
        products.append(Product(id=pid, title=title, category=category, brand=str(row.get("brand", ""))))
    if not products:
        raise ValueError(f"--data {data}: no products")
    return Catalogue(products=tuple(products), categories=tuple(sorted({p.category for p in products})))


def _pick(row: dict[str, object], keys: tuple[str, ...], data: Path, n: int) -> str:
    for key in keys:
        value = row.get(key)
        if value:
            return str(value).strip()
    raise ValueError(f"--data {data}: row {n} has none of the columns {keys}")
