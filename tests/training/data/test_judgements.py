"""WANDS- and ESCI-style judged catalogues from small fixture files, each with its own grade set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.rules import ESCI_GRADES, GRADES
from training.data.judgements import UNKNOWN_CATEGORY, is_esci_dir, is_wands_dir, load_esci, load_wands


def test_wands(tmp_path: Path) -> None:
    (tmp_path / "product.csv").write_text(
        "product_id\tproduct_name\tproduct_class\tcategory hierarchy\n"
        "1\tsolid wood coffee table\tCoffee Tables\tFurniture / Living Room / Coffee Tables\n"
        "2\t\tRugs\tRugs\n"
        "3\tjute area rug\tArea Rugs\t\n"
    )
    (tmp_path / "query.csv").write_text("query_id\tquery\tquery_class\n0\twood table\tCoffee Tables\n")
    (tmp_path / "label.csv").write_text(
        "id\tquery_id\tproduct_id\tlabel\n0\t0\t1\tExact\n1\t0\t3\tIrrelevant\n2\t0\t2\tPartial\n"
    )
    assert is_wands_dir(tmp_path)
    judged = load_wands(tmp_path)
    products = {p.id: p for p in judged.catalogue.products}
    assert products["1"].category == "Furniture > Living Room > Coffee Tables"
    assert products["3"].category == "Area Rugs" and "2" not in products  # no name: skipped
    assert judged.grades == GRADES
    assert [(j.query, j.product_id, j.grade) for j in judged.judgements] == [
        ("wood table", "1", 2),
        ("wood table", "3", 0),
    ]
    (tmp_path / "label.csv").write_text("id\tquery_id\tproduct_id\tlabel\n0\t9\t1\tExact\n")
    with pytest.raises(ValueError, match="label.csv:2: unknown query_id '9'"):
        load_wands(tmp_path)


def test_esci(tmp_path: Path) -> None:
    (tmp_path / "shopping_queries_dataset_products.csv").write_text(
        "product_id,product_title,product_brand,product_locale\nA,usb cable,Acme,us\nB,kabel,Acme,de\n"
    )
    rows = [
        {"query": "usb cable", "product_id": "A", "esci_label": "E", "product_locale": "us"},
        {"query": "cable", "product_id": "A", "esci_label": "S", "product_locale": "us"},
        {"query": "kabel", "product_id": "B", "esci_label": "I", "product_locale": "de"},
    ]
    (tmp_path / "shopping_queries_dataset_examples.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert is_esci_dir(tmp_path)
    judged = load_esci(tmp_path)
    assert [p.id for p in judged.catalogue.products] == ["A"]
    assert judged.catalogue.categories == (UNKNOWN_CATEGORY,)
    # ESCI keeps its four grades: Exact 3, Substitute 2 (Complement 1, Irrelevant 0).
    assert judged.grades == ESCI_GRADES == ("irrelevant", "complement", "substitute", "exact")
    assert [(j.query, j.grade) for j in judged.judgements] == [("usb cable", 3), ("cable", 2)]
    rows[0]["esci_label"] = "X"
    (tmp_path / "shopping_queries_dataset_examples.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match="esci_label 'X' is not one of E/S/C/I"):
        load_esci(tmp_path)
