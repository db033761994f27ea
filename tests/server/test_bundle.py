"""Every way a bundle can be corrupt is refused with a message naming the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.bundle import MANIFEST, BundleError, load_bundle, sha256_file
from server.errors import FailedPrecondition
from server.manifest import INDEX_SLOTS, FileEntry, Manifest

ROOT = Path(__file__).resolve().parents[2]


def edit_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def reseal(bundle: Path, name: str) -> None:
    """Updates a file's hashes in the manifest, so only the deeper check can catch the change."""
    edit_manifest(bundle, lambda m: m["files"].update({name: FileEntry.of(bundle / name).to_json()}))


def as_schema2(bundle: Path) -> None:
    """Rewrites a bundle as schema 2 wrote it: products.json instead of the product arrays."""
    products = load_bundle(bundle).products
    assert products is not None
    raw = {
        "ids": list(products.ids),
        "titles": list(products.titles),
        "categories": products.categories.tolist(),
    }
    (bundle / "products.json").write_text(json.dumps(raw))

    def older(m: dict[str, Any]) -> None:
        index = m["components"]["index"]
        for spec in index.pop("arrays", {}).values():
            m["files"].pop(spec["file"])
            (bundle / spec["file"]).unlink()
        index["products"] = "products.json"
        m["schema_version"] = 2

    edit_manifest(bundle, older)
    reseal(bundle, "products.json")


def test_tiny_bundle_loads(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    bundle.warm_up()
    assert bundle.embedding_dim == 384 and len(bundle.labels) >= 30
    assert len(bundle.index) == len(bundle.products.ids) * bundle.index.views
    assert bundle.capabilities == ("intent", "retrieval", "relevance")


def test_trained_manifest_reads_and_writes_back_unchanged(tiny_bundle: Path, tmp_path: Path) -> None:
    """What training wrote is what server/manifest.py parses and would write itself."""
    Manifest.read(tiny_bundle).write(tmp_path)
    assert (tmp_path / MANIFEST).read_text() == (tiny_bundle / MANIFEST).read_text()


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_missing_manifest(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(bundle_copy)


def test_manifest_not_json(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


def test_unknown_schema_version(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        load_bundle(bundle_copy)


def test_missing_file(bundle_copy: Path) -> None:
    (bundle_copy / "intent.onnx").unlink()
    with pytest.raises(BundleError, match="intent.onnx: listed in the manifest but missing"):
        load_bundle(bundle_copy)


def test_sha_mismatch(bundle_copy: Path) -> None:
    with (bundle_copy / "query_encoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="query_encoder.onnx: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_missing_field(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.pop("embedding_dim"))
    with pytest.raises(BundleError, match="field embedding_dim is missing"):
        load_bundle(bundle_copy)


def test_shape_mismatch_labels_vs_model(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["labels"].pop())
    with pytest.raises(BundleError, match=r"components.intent.outputs: model output probabilities"):
        load_bundle(bundle_copy)


def test_shape_mismatch_embedding_dim(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.update(embedding_dim=128))
    with pytest.raises(BundleError, match="components.query_encoder.outputs"):
        load_bundle(bundle_copy)


def test_declared_input_name_mismatch(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["components"]["intent"]["inputs"][0].update(name="tokens"))
    with pytest.raises(BundleError, match="components.intent.inputs"):
        load_bundle(bundle_copy)


def test_model_file_not_onnx(bundle_copy: Path) -> None:
    (bundle_copy / "relevance.onnx").write_bytes(b"definitely not a protobuf")
    reseal(bundle_copy, "relevance.onnx")
    with pytest.raises(BundleError, match="relevance.onnx: onnxruntime cannot load it"):
        load_bundle(bundle_copy)


def test_disallowed_file_kind(bundle_copy: Path) -> None:
    (bundle_copy / "model.pkl").write_bytes(b"\x80\x04")
    edit_manifest(
        bundle_copy,
        lambda m: m["files"].update({"model.pkl": {"sha256": sha256_file(bundle_copy / "model.pkl")}}),
    )
    with pytest.raises(BundleError, match="files.model.pkl: not an allowed bundle file"):
        load_bundle(bundle_copy)


def test_path_outside_bundle(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["files"].update({"../escape.json": {"sha256": "0" * 64}}))
    with pytest.raises(BundleError, match="not an allowed bundle file"):
        load_bundle(bundle_copy)


def _needs_arrays(bundle: Path) -> None:
    if Manifest.read(bundle).schema_version < 3:
        pytest.skip("SIFT_TEST_BUNDLE is a schema 2 bundle (products.json): no product arrays to corrupt")


def test_schema2_bundle_loads(bundle_copy: Path, tiny_bundle: Path) -> None:
    """A bundle written before the product arrays (products.json) loads and answers as the new one."""
    as_schema2(bundle_copy)
    old, new = load_bundle(bundle_copy), load_bundle(tiny_bundle)
    assert old.schema_version == 2 and list(old.products.ids) == list(new.products.ids)
    for role in ("categories", "text_hash", "word_ids", "char_ids", "category_rows", "exact_vectors"):
        assert (old.products.arrays[role] == new.products.arrays[role]).all(), role


def test_product_array_dtype_mismatch(bundle_copy: Path) -> None:
    _needs_arrays(bundle_copy)
    edit_manifest(bundle_copy, lambda m: m["components"]["index"]["arrays"]["categories"].update(dtype="<i8"))
    with pytest.raises(BundleError, match="arrays.categories: products_categories.npy is <i8"):
        load_bundle(bundle_copy)


def test_product_array_category_out_of_range(bundle_copy: Path) -> None:
    _needs_arrays(bundle_copy)
    import numpy as np

    path = bundle_copy / "products_categories.npy"
    categories = np.load(path)
    categories[0] = 10_000
    np.save(path, categories, allow_pickle=False)
    reseal(bundle_copy, path.name)
    with pytest.raises(BundleError, match="products_categories.npy: values outside"):
        load_bundle(bundle_copy)


def test_index_slots_are_used_checked_and_optional(bundle_copy: Path) -> None:
    """A bundle's slot map opens the index without usearch's key lookups; a slot map that disagrees with
    the index is refused naming the file, and a bundle without one (before it) loads with the lookups."""
    import numpy as np

    _needs_arrays(bundle_copy)
    if INDEX_SLOTS not in (Manifest.read(bundle_copy).components.index.arrays or {}):
        pytest.skip("SIFT_TEST_BUNDLE was written before index slots")
    assert load_bundle(bundle_copy).index._slotted is not None
    path = bundle_copy / "products_index_slots.npy"
    slots = np.load(path)
    slots[-1] = 10**9
    np.save(path, slots, allow_pickle=False)
    reseal(bundle_copy, path.name)
    with pytest.raises(BundleError, match="with products_index_slots.npy: .*slot outside"):
        load_bundle(bundle_copy)
    n = len(slots)
    edit_manifest(bundle_copy, lambda m: m["components"]["index"]["arrays"]["index_slots"].update(shape=[3]))
    with pytest.raises(
        BundleError, match=rf"index_slots.npy: holds int64\[{n}\], the manifest says <i8\[3\]"
    ):
        load_bundle(bundle_copy)
    np.save(path, slots[:3], allow_pickle=False)
    reseal(bundle_copy, path.name)
    with pytest.raises(BundleError, match=f"with products_index_slots.npy: 3 slots for {n} vectors"):
        load_bundle(bundle_copy)
    edit_manifest(bundle_copy, lambda m: m["components"]["index"]["arrays"].pop("index_slots"))
    assert load_bundle(bundle_copy).index._slotted is None


def test_index_count_mismatch(bundle_copy: Path) -> None:
    as_schema2(bundle_copy)
    products = json.loads((bundle_copy / "products.json").read_text())
    for key in ("ids", "titles", "categories"):
        products[key].pop()
    (bundle_copy / "products.json").write_text(json.dumps(products))
    reseal(bundle_copy, "products.json")
    with pytest.raises(BundleError, match="index holds .* vectors but products.json lists"):
        load_bundle(bundle_copy)


def test_product_category_out_of_range(bundle_copy: Path) -> None:
    as_schema2(bundle_copy)
    products = json.loads((bundle_copy / "products.json").read_text())
    products["categories"][0] = 10_000
    (bundle_copy / "products.json").write_text(json.dumps(products))
    reseal(bundle_copy, "products.json")
    with pytest.raises(BundleError, match="category index is outside"):
        load_bundle(bundle_copy)


def test_bad_rule_refused(bundle_copy: Path) -> None:
    rules = json.loads((bundle_copy / "rules.json").read_text())
    rules["relevance"]["pre"] = [{"when": [["price", ">", 3]], "grade": "exact"}]
    (bundle_copy / "rules.json").write_text(json.dumps(rules))
    reseal(bundle_copy, "rules.json")
    with pytest.raises(BundleError, match=r"rules.json: relevance.pre\[0\]: feature 'price' is not one of"):
        load_bundle(bundle_copy)


def test_rule_naming_unknown_label_refused(bundle_copy: Path) -> None:
    rules = json.loads((bundle_copy / "rules.json").read_text())
    rules["intent"]["exact_query"] = {"sofa": "Nowhere > Sofas"}
    (bundle_copy / "rules.json").write_text(json.dumps(rules))
    reseal(bundle_copy, "rules.json")
    with pytest.raises(BundleError, match="unknown label 'Nowhere > Sofas'"):
        load_bundle(bundle_copy)


def test_unknown_component_refused(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["components"].update(reranker={"file": "intent.onnx"}))
    with pytest.raises(BundleError, match=r"unknown components \['reranker'\]"):
        load_bundle(bundle_copy)


def test_index_views_must_match(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["components"]["index"].update(views=5))
    with pytest.raises(BundleError, match="with 5 view"):
        load_bundle(bundle_copy)


def test_relevance_without_index_refused(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["components"].pop("index"))
    with pytest.raises(BundleError, match="components.query_encoder: present, but no capability"):
        load_bundle(bundle_copy)


def test_intent_only_bundle(bundle_copy: Path) -> None:
    """A taxonomy-only bundle: intent alone; the other calls fail with a clear precondition error."""

    def intent_only(m: dict[str, Any]) -> None:
        for name in ("query_encoder", "query_student", "query_static", "index", "lexical", "relevance"):
            m["components"].pop(name, None)

    edit_manifest(bundle_copy, intent_only)
    bundle = load_bundle(bundle_copy)
    bundle.warm_up()
    assert bundle.capabilities == ("intent",) and bundle.index is None
    with pytest.raises(FailedPrecondition, match="cannot serve retrieval: it has no query_encoder, index"):
        bundle.require("retrieval")


def test_serve_refuses_corrupt_bundle_and_exits_nonzero(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=7))
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--bundle", str(bundle_copy), "--port", "0", "--metrics-port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "bundle refused" in proc.stderr and "schema_version 7 is not supported" in proc.stderr
