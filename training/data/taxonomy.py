"""The taxonomy-only input, the cold start of every new store: a label set and some query text, but no
labelled training data. A directory with:

- `classes.txt`: one label per line, optionally a path (`Furniture > Chairs > Accent Chairs`), optionally
  followed by a TAB and a free-text description. Blank lines and `#` comments are ignored. Only " > "
  separates levels: real class names hold "/" and "&" ("Accent Chests / Cabinets").
- `queries.tsv` (optional): TAB separated with a header; `query` is required, `query_class` (empty =
  unknown class) and `split` (train/dev/test) are optional. Other names for the first two are given with
  --query-column and --category-column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from training.data.columns import GUESS, Columns, first, keys, optional_keys

CLASSES = "classes.txt"
QUERIES = "queries.tsv"
SEPARATOR = " > "
QUERY_CLASS_KEYS = ("query_class",)


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    text: str
    label: str | None
    """A label of the taxonomy, or None when the query's class is unknown."""
    split: str


@dataclass(frozen=True, slots=True)
class Taxonomy:
    labels: tuple[str, ...]
    descriptions: dict[str, str]
    queries: tuple[LabelledQuery, ...]

    def split(self, name: str) -> list[LabelledQuery]:
        return [q for q in self.queries if q.split == name]


def label_at_level(path: str, level: int | None) -> str:
    """The first `level` levels of a path (all of it when level is None or the path is shorter)."""
    levels = [p.strip() for p in path.split(">") if p.strip()]
    return SEPARATOR.join(levels if level is None else levels[:level])


def is_taxonomy_dir(path: Path) -> bool:
    return (path / CLASSES).is_file()


def load_taxonomy(directory: Path, label_level: int | None = None, columns: Columns = GUESS) -> Taxonomy:
    classes = directory / CLASSES
    if not classes.is_file():
        raise FileNotFoundError(f"{classes}: missing; a taxonomy directory needs {CLASSES}")
    labels: dict[str, None] = {}
    descriptions: dict[str, str] = {}
    full_to_label: dict[str, str] = {}
    for n, line in enumerate(classes.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, description = line.partition("\t")
        full = label_at_level(name, None)
        if not full:
            raise ValueError(f"{classes}:{n}: empty label")
        label = label_at_level(full, label_level)
        labels.setdefault(label)
        full_to_label[full] = label
        if description.strip() and label == full:
            descriptions[label] = description.strip()
    if not labels:
        raise ValueError(f"{classes}: no labels")
    queries = _load_queries(directory / QUERIES, full_to_label, columns)
    return Taxonomy(tuple(labels), descriptions, tuple(queries))


def _load_queries(path: Path, full_to_label: dict[str, str], columns: Columns) -> list[LabelledQuery]:
    if not path.is_file():
        columns.only((), f"{path.parent} (it has no {QUERIES})")
        return []
    # A query class may be the full path or just its leaf name (as real query logs give it).
    by_leaf: dict[str, set[str]] = {}
    for full, label in full_to_label.items():
        by_leaf.setdefault(full.split(SEPARATOR)[-1].lower(), set()).add(label)
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = reader.fieldnames or []
        query_keys = keys(header, columns.query, ("query",), "query", path)
        class_keys = optional_keys(header, columns.category, QUERY_CLASS_KEYS, "category", path)
        for n, row in enumerate(reader, start=2):
            text = first(row, query_keys)
            if not text:
                continue
            cls = first(row, class_keys)
            label = None
            if cls:
                full = label_at_level(cls, None)
                if full in full_to_label:
                    label = full_to_label[full]
                elif len(by_leaf.get(cls.lower(), ())) == 1:
                    label = next(iter(by_leaf[cls.lower()]))
                else:
                    raise ValueError(
                        f"{path}:{n}: {class_keys[0]} {cls!r} matches no single label of {CLASSES}"
                    )
            out.append(LabelledQuery(text, label, (row.get("split") or "").strip()))
    return out
