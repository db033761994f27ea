"""User data files as they come: column flags instead of rewriting the file, " >> " paths, pairs files."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.rules import ESCI_GRADES, GRADES
from training.data.columns import Columns
from training.data.dataset import kind_source, load_training_data, source_path
from training.data.judgements import UNKNOWN_CATEGORY, load_pairs
from training.data.loaders import category_path, load_catalogue

FLIPKART_LIKE = (
    "orig_row,split,product_name,brand,cat_l1\n"
    "14,train,Carrel Printed Women's,Carrel,Clothing\n"
    "15,train,Steel Kadhai,,Kitchen & Dining\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_column_flags_name_what_the_guesses_miss(tmp_path: Path) -> None:
    path = write(tmp_path / "products.csv", FLIPKART_LIKE)
    catalogue = load_catalogue(path, 0, 0, Columns(category="cat_l1", id="orig_row"))
    assert [(p.id, p.title, p.category, p.brand) for p in catalogue.products] == [
        ("14", "Carrel Printed Women's", "Clothing", "Carrel"),
        ("15", "Steel Kadhai", "Kitchen & Dining", ""),
    ]
    # A named column wins over a guessed one (`title` here).
    both = write(tmp_path / "both.csv", "title,product_name,category\nsku 1,Blue Mug,Kitchen\n")
    assert load_catalogue(both, 0, 0).products[0].title == "sku 1"
    assert load_catalogue(both, 0, 0, Columns(title="product_name")).products[0].title == "Blue Mug"


def test_unknown_or_missing_column_names_the_flag_the_file_and_its_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "products.csv", FLIPKART_LIKE)
    with pytest.raises(
        ValueError,
        match=r"--category-column 'category_l1': .*products.csv has no such column; "
        r"it has orig_row, split, product_name, brand, cat_l1",
    ):
        load_catalogue(path, 0, 0, Columns(category="category_l1"))
    with pytest.raises(
        ValueError, match=r"no category column .* name it with --category-column\. The file has "
    ):
        load_catalogue(path, 0, 0)
    with pytest.raises(ValueError, match=r"row 2 has no value in brand"):
        load_catalogue(path, 0, 0, Columns(title="brand", category="cat_l1"))


def test_double_arrow_paths_split_into_levels(tmp_path: Path) -> None:
    assert (
        category_path("footwear >> womens footwear >> ballerinas")
        == "footwear > womens footwear > ballerinas"
    )
    assert category_path(" Home > Decor/Lamps ") == "Home > Decor > Lamps"
    path = write(
        tmp_path / "sample.csv",
        "uniq_id,product_name,cat_path\na1,aw bellies,footwear >> womens footwear >> ballerinas\n"
        "b2,steel kadhai,kitchen  dining >> cookware\n",
    )
    columns = Columns(title="product_name", category="cat_path", id="uniq_id")
    data = load_training_data(path, 0, 0.5, 0, label_level=1, columns=columns)
    assert data.labels == ["footwear", "kitchen  dining"]
    assert data.catalogue is not None
    assert data.catalogue.products[0].category == "footwear > womens footwear > ballerinas"


def test_jsonl_and_tsv_take_the_flags_too(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "p.jsonl", '{"sku": "A", "label_text": "mug", "cat": "Kitchen"}\n')
    catalogue = load_catalogue(jsonl, 0, 0, Columns(title="label_text", category="cat", id="sku"))
    assert catalogue.products[0].id == "A" and catalogue.categories == ("Kitchen",)
    tsv = write(tmp_path / "p.tsv", "name\tcategory\nmug\tKitchen > Cups\n")
    assert load_catalogue(tsv, 0, 0).products[0].category == "Kitchen > Cups"  # the guesses, as before


def test_pairs_file_with_named_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pairs.csv",
        "q,product_id,product_title,product_brand,lbl\n"
        'usb cable,A,"Acme USB cable, 2 m",Acme,E\n'
        "charger,B,Acme charger,Acme,S\n"
        'usb c cable,A,"Acme USB cable, 2 m",Acme,I\n',
    )
    judged = load_pairs(path, Columns(query="q", label="lbl"))
    assert [(p.id, p.category, p.brand) for p in judged.catalogue.products] == [
        ("A", UNKNOWN_CATEGORY, "Acme"),
        ("B", UNKNOWN_CATEGORY, "Acme"),
    ]
    # E/S/C/I labels keep ESCI's four grades (irrelevant, complement, substitute, exact).
    assert judged.grades == ESCI_GRADES
    assert [(j.query, j.product_id, j.grade) for j in judged.judgements] == [
        ("usb cable", "A", 3),
        ("charger", "B", 2),
        ("usb c cable", "A", 0),
    ]
    # Through --data: a named query or label column makes the file a pairs file.
    data = load_training_data(path, 0, 0.5, 0, columns=Columns(query="q", label="lbl"))
    assert data.source.startswith("pairs:") and len(data.judgements) == 3
    assert data.grades == ESCI_GRADES
    with pytest.raises(
        ValueError, match=r"no query column \(looked for query\); name it with --query-column"
    ):
        load_pairs(path, Columns(label="lbl"))
    with pytest.raises(ValueError, match=r"pairs.csv: row 1: label 'Acme' is not E/S/C/I"):
        load_pairs(path, Columns(query="q", label="product_brand"))


def test_pairs_file_guessed_from_a_query_column(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.csv", "query,title,label\nrug,jute area rug,Exact\nrug,wool rug,Partial\n")
    data = load_training_data(path, 0, 0.5, 0)
    assert data.source.startswith("pairs:")
    assert [(j.query, j.grade) for j in data.judgements] == [("rug", 2), ("rug", 1)]
    assert data.grades == GRADES  # WANDS-style labels: the three grades
    assert [p.id for p in data.catalogue.products] == ["P0000000", "P0000001"]  # type: ignore[union-attr]


def test_pairs_file_mixing_grade_sets_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.csv", "query,title,label\nrug,jute area rug,Partial\nrug,rug pad,C\n")
    with pytest.raises(ValueError, match=r"labels mix ESCI's grades .* with \['partial'\]"):
        load_pairs(path)
    assert load_training_data(None, 50, 0.1, 0).grades == GRADES  # the synthetic default


def test_flags_an_input_does_not_read_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "products.csv", FLIPKART_LIKE)
    with pytest.raises(ValueError, match="--id-column: not read from the embedded synthetic catalogue"):
        load_training_data(None, 50, 0.1, 0, columns=Columns(id="orig_row"))
    (tmp_path / "tax").mkdir()
    write(tmp_path / "tax" / "classes.txt", "Sofas\n")
    with pytest.raises(ValueError, match="--title-column: not read from a taxonomy directory"):
        load_training_data(tmp_path / "tax", 50, 0.1, 0, columns=Columns(title="product_name"))
    with pytest.raises(ValueError, match=r"--category-column: not read from .*tax \(it has no queries.tsv\)"):
        load_training_data(tmp_path / "tax", 50, 0.1, 0, columns=Columns(category="cls"))
    assert load_training_data(path, 0, 0.5, 0, columns=Columns(category="cat_l1")).labels == [
        "Clothing",
        "Kitchen & Dining",
    ]


def test_source_path_reads_the_recorded_training_data(tmp_path: Path) -> None:
    """The manifest's training.data: "synthetic", a catalogue file's bare path, or KIND:PATH for the rest."""
    assert source_path("synthetic") is None and source_path("") is None
    assert source_path(str(tmp_path / "names.csv")) == tmp_path / "names.csv"
    for kind in ("taxonomy", "wands", "esci", "pairs"):
        assert source_path(f"{kind}:{tmp_path}") == tmp_path
        assert kind_source(kind, tmp_path) == f"{kind}:{tmp_path}"
    with pytest.raises(ValueError, match="'catalogue'"):
        kind_source("catalogue", tmp_path)
    assert source_path("catalogue:v2.csv") == Path("catalogue:v2.csv")  # a colon in a plain file name
