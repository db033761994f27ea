"""The taxonomy-only input: classes.txt (paths, descriptions), queries.tsv (classes by leaf name, splits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.columns import Columns
from training.data.taxonomy import is_taxonomy_dir, label_at_level, load_taxonomy


def write(root: Path, classes: str, queries: str | None = None) -> Path:
    (root / "classes.txt").write_text(classes, encoding="utf-8")
    if queries is not None:
        (root / "queries.tsv").write_text(queries, encoding="utf-8")
    return root


def test_paths_levels_and_descriptions(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        "# home goods\nFurniture > Chairs > Accent Chairs\tchairs for a living room\n"
        "Furniture > Chairs > Dining Chairs\n\nAccent Chests / Cabinets\nAccent Chests / Cabinets\n",
        "query_id\tquery\tquery_class\tsplit\n1\tblue velvet chair\tAccent Chairs\ttrain\n"
        "2\tmirrored chest\tAccent Chests / Cabinets\ttest\n3\tgift card\t\tdev\n",
    )
    assert is_taxonomy_dir(root)
    tax = load_taxonomy(root)
    # "/" is part of a name, not a level separator; duplicates collapse.
    assert tax.labels == (
        "Furniture > Chairs > Accent Chairs",
        "Furniture > Chairs > Dining Chairs",
        "Accent Chests / Cabinets",
    )
    assert tax.descriptions == {"Furniture > Chairs > Accent Chairs": "chairs for a living room"}
    assert [(q.text, q.label, q.split) for q in tax.queries] == [
        ("blue velvet chair", "Furniture > Chairs > Accent Chairs", "train"),
        ("mirrored chest", "Accent Chests / Cabinets", "test"),
        ("gift card", None, "dev"),
    ]
    assert [q.text for q in tax.split("test")] == ["mirrored chest"]
    top = load_taxonomy(root, label_level=2)
    assert top.labels == ("Furniture > Chairs", "Accent Chests / Cabinets")
    assert top.queries[0].label == "Furniture > Chairs"


def test_label_at_level() -> None:
    assert label_at_level("A > B > C", 1) == "A"
    assert label_at_level("A > B > C", 2) == "A > B"
    assert label_at_level("A > B", 5) == "A > B"
    assert label_at_level(" A >B ", None) == "A > B"


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="classes.txt: missing"):
        load_taxonomy(tmp_path)
    root = write(tmp_path, "Sofas\n", "query\tquery_class\nsofa\tBeds\n")
    with pytest.raises(ValueError, match=r"queries.tsv:2: query_class 'Beds' matches no single label"):
        load_taxonomy(root)
    write(tmp_path, "Sofas\n", "text\nsofa\n")
    with pytest.raises(
        ValueError, match=r"no query column \(looked for query\); name it with --query-column"
    ):
        load_taxonomy(root)
    write(tmp_path, "# nothing\n")
    with pytest.raises(ValueError, match="no labels"):
        load_taxonomy(root)


def test_query_and_class_columns_named_by_flags(tmp_path: Path) -> None:
    root = write(
        tmp_path, "Sofas\nBeds\n", "text\tclass\tsplit\nsofa bed\tBeds\ttest\ngrey couch\tSofas\ttrain\n"
    )
    tax = load_taxonomy(root, columns=Columns(query="text", category="class"))
    assert [(q.text, q.label, q.split) for q in tax.queries] == [
        ("sofa bed", "Beds", "test"),
        ("grey couch", "Sofas", "train"),
    ]
    with pytest.raises(
        ValueError,
        match=r"--category-column 'cls': .*queries.tsv has no such column; it has text, class, split",
    ):
        load_taxonomy(root, columns=Columns(query="text", category="cls"))
