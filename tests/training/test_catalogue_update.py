"""`sift-train update` on the tiny bundle: products added, replaced and removed without retraining, by the
bundle's own product teacher, and what it cannot do refused with a message saying why."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from server.bundle import load_bundle
from server.featurize import lexical_features, title_id_block
from server.manifest import Manifest
from training.__main__ import main
from training.catalogue_update import update_bundle


def _write(
    path: Path, rows: list[tuple[str, str, str]], header: tuple[str, ...] = ("id", "title", "category")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def updated(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny bundle with one product replaced, two added and two removed (one of them the last row)."""
    old = load_bundle(tiny_bundle)
    products, labels = old.products, old.labels
    tmp = tmp_path_factory.mktemp("update")
    n = len(products)
    data = _write(
        tmp / "data.csv",
        [
            (products.ids[1], "Walnut Writing Desk with Drawer", labels[int(products.categories[1])].path),
            ("NEW-1", "Emerald Velvet Accent Chair", labels[0].path),
            ("NEW-2", "Brass Floor Lamp with Linen Shade", labels[1].path + " > Extra Level"),
        ],
    )
    remove = tmp / "remove.txt"
    remove.write_text(f"{products.ids[2]}\n{products.ids[n - 1]}\n")
    out = tmp / "new"
    report = update_bundle(tiny_bundle, out, data, remove, teacher_cache=tmp / "teachers")
    assert (report.added, report.replaced, report.removed, report.products) == (2, 1, 2, n)
    # The teacher is the int8 ONNX export, built on first use into the cache, and gated on this bundle.
    gate = report.teacher_gate
    assert gate["runtime"].startswith("onnxruntime ") and Path(gate["export"]).is_relative_to(
        tmp / "teachers"
    )
    assert gate["min_cosine"] >= gate["required"]["min"] and gate["mean_cosine"] >= gate["required"]["mean"]
    return tiny_bundle, out


def test_update_adds_replaces_and_removes(updated: tuple[Path, Path]) -> None:
    before, after = (load_bundle(p) for p in updated)
    old, new = before.products, after.products
    assert after.version != before.version and after.schema_version == 3
    gone = (old.ids[2], old.ids[len(old) - 1])
    assert all(new.row_of.get(pid) is None for pid in gone)
    # Survivors keep their vectors and titles, wherever they moved.
    for pid in (old.ids[0], old.ids[len(old) - 2], old.ids[len(old) // 2]):
        a, b = old.row_of[pid], new.row_of[pid]
        assert new.titles[b] == old.titles[a] and new.categories[b] == old.categories[a]
        cosine = float(before.index.vectors(np.array([a]))[0] @ after.index.vectors(np.array([b]))[0])
        assert cosine > 0.999
    # The replaced product's title, and the lexicon's features of it, are the new title's.
    row = new.row_of[old.ids[1]]
    assert new.titles[row] == "Walnut Writing Desk with Drawer"
    words = after.featurizer.words("walnut desk")
    got = after.lexicon.features(words, np.array([row]))
    expected = lexical_features(words, [after.featurizer.words(new.titles[row])], after.featurizer)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)
    # A new product is found by its title, densely and lexically; a deeper path lands on its label.
    model, ids = after.query_model()
    vector = model.run({model.signature()[0][0].name: ids(["emerald velvet accent chair"])})[0]
    rows, _ = after.index.search(vector, 5)
    assert new.row_of["NEW-1"] in rows.tolist()
    assert new.row_of["NEW-2"] in after.lexical.search("brass floor lamp linen", 3)[0].tolist()
    assert new.categories[new.row_of["NEW-2"]] == 1
    # The students are untouched, and the update is recorded.
    m_old, m_new = Manifest.read(updated[0]), Manifest.read(updated[1])
    for name in ("intent.onnx", "query_encoder.onnx", "relevance.onnx", "rules.json"):
        assert m_new.files[name].sha256 == m_old.files[name].sha256
    assert m_new.training["updates"][-1]["from"] == before.version
    assert m_new.training["updates"][-1]["teacher_gate"]["mean_cosine"] >= 0.99


def test_update_of_an_updated_bundle(updated: tuple[Path, Path], tmp_path: Path) -> None:
    """An update reads the product arrays an update wrote."""
    remove = tmp_path / "remove.txt"
    remove.write_text("NEW-1\n")
    report = update_bundle(updated[1], tmp_path / "again", remove=remove, encode=_teacher_of(updated[1]))
    assert report.removed == 1
    assert load_bundle(tmp_path / "again").products.row_of.get("NEW-1") is None


def _teacher_of(bundle: Path):  # the bundle's stored title vectors as the "teacher", for a quick update
    loaded = load_bundle(bundle)
    by_title: dict[str, int] = {}
    for i, title in enumerate(loaded.products.titles):
        by_title.setdefault(title, i)
    return lambda texts: loaded.index.vectors(np.array([by_title[t] for t in texts]))


@pytest.mark.parametrize(
    ("rows", "header", "remove", "match"),
    [
        (
            [("X1", "A Chair", "Garden > Gnomes")],
            None,
            None,
            "category 'Garden > Gnomes', which the intent model",
        ),
        ([("A Chair", "Bath > Towels")], ("title", "category"), None, "needs a product id column"),
        (None, None, ["NO-SUCH-ID"], "1 ids are not in the bundle"),
        ([("X1", "A", "Bath > Towels"), ("X1", "B", "Bath > Towels")], None, None, "product ids repeat"),
    ],
)
def test_update_refuses_what_it_cannot_do(
    tiny_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: list[tuple[str, ...]] | None,
    header: tuple[str, ...] | None,
    remove: list[str] | None,
    match: str,
) -> None:
    args = ["update", "--bundle", str(tiny_bundle), "--output", str(tmp_path / "out")]
    if rows is not None:
        args += ["--data", str(_write(tmp_path / "data.csv", rows, header or ("id", "title", "category")))]
    if remove is not None:
        (tmp_path / "remove.txt").write_text("\n".join(remove))
        args += ["--remove", str(tmp_path / "remove.txt")]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_update_refuses_another_teacher(tiny_bundle: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "data.csv", [("X1", "A Chair", load_bundle(tiny_bundle).labels[0].path)])
    rng = np.random.default_rng(0)

    def other(texts: list[str]) -> np.ndarray:
        v = rng.standard_normal((len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with pytest.raises(ValueError, match="not the teacher the bundle was built with"):
        update_bundle(tiny_bundle, tmp_path / "out", data, encode=other)


def test_update_refuses_a_teacher_export_off_the_index(tiny_bundle: Path, tmp_path: Path) -> None:
    """Vectors near the index's but not near enough (as plain int8 MiniLM's are, at a mean cosine of about
    0.965) are refused: added products would not rank among the old ones as the teacher would rank them."""
    data = _write(tmp_path / "data.csv", [("X1", "A Chair", load_bundle(tiny_bundle).labels[0].path)])
    stored = _teacher_of(tiny_bundle)
    rng = np.random.default_rng(0)

    def blurred(texts: list[str]) -> np.ndarray:
        v = stored(texts)
        v = v + rng.standard_normal(v.shape).astype(np.float32) * 0.014  # cosine about 0.965 at dim 384
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with pytest.raises(ValueError, match=r"below the 0.99 \(worst 0.98\) required"):
        update_bundle(tiny_bundle, tmp_path / "out", data, encode=blurred)
    assert not (tmp_path / "out").exists()


def test_update_keeps_and_embeds_title_bags(updated: tuple[Path, Path]) -> None:
    """A text_bags bundle's per-product title bags follow the update: an unchanged product keeps its bag,
    and an added or replaced one gets the bag the title model gives its new title."""
    before, after = (load_bundle(p) for p in updated)
    assert before.title_bags is not None and after.title_bags is not None
    new = after.products
    for pid in (before.products.ids[0], before.products.ids[3]):
        assert np.array_equal(
            after.title_bags[new.row_of[pid]], before.title_bags[before.products.row_of[pid]]
        )
    lexicon = after.lexicon.arrays
    buckets = after.featurizer.config.num_buckets
    for pid in ("NEW-1", "NEW-2", before.products.ids[1]):
        row = new.row_of[pid]
        ids = title_id_block(lexicon, np.array([row]), buckets)
        expected = after.relevance_titles.run({"title_ids": ids})[0]
        assert after.title_bags[row] == pytest.approx(expected, abs=1e-6)
    assert not np.array_equal(
        after.title_bags[new.row_of[before.products.ids[1]]],
        before.title_bags[before.products.row_of[before.products.ids[1]]],
    )
