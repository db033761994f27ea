"""The product arrays as the server reads them: id lookup, string columns, and category filters searched
exactly over stored vectors or over-fetched from the index, against exact search."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.bundle import Bundle, load_bundle
from server.catalogue import ProductTable


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return load_bundle(tiny_bundle)


def test_id_lookup_and_columns(bundle: Bundle) -> None:
    products = bundle.products
    for row in (0, 7, len(products) - 1):
        assert products.row_of[products.ids[row]] == row and products.row_of.get(products.ids[row]) == row
    for missing in ("", "nope", "P" * 500, products.ids[0] + "\0"):
        assert products.row_of.get(missing) is None and missing not in products.row_of
    assert products.ids[-1] == products.ids[len(products) - 1] and products.ids[:2] == [
        products.ids[0],
        products.ids[1],
    ]
    with pytest.raises(IndexError):
        products.titles[len(products)]


def test_rows_of_many_ids_at_once(bundle: Bundle) -> None:
    """IdLookup.rows (one binary search for a whole ScoreRelevance) agrees with get, -1 for unknown ids:
    empty, too long for the stored width (numpy would cut it to a prefix that may exist), trailing NUL."""
    products = bundle.products
    picked = [len(products) - 1, 0, 7, 7]
    unknown = ["", "nope", products.ids[0] + "x" * 500, products.ids[0] + "\0"]
    ids = [products.ids[r] for r in picked] + unknown
    assert products.row_of.rows(ids).tolist() == picked + [-1] * len(unknown)
    assert products.row_of.rows([]).tolist() == []


def test_stored_vectors_are_the_index_vectors(bundle: Bundle) -> None:
    """A candidate's vector read from its category's stored block is the one the ANN index holds."""
    rows = np.random.default_rng(2).integers(0, len(bundle.products), 300)
    found, vectors = bundle.products.stored_vectors(rows, bundle.index.views)
    assert found.all()  # every category of the tiny bundle is stored
    np.testing.assert_array_equal(vectors, bundle.index.vectors(rows))
    # A category without stored vectors is left to the index.
    table = _unstored(bundle, int(bundle.products.categories[rows[0]]))
    found, vectors = table.stored_vectors(rows, bundle.index.views)
    assert (~found).sum() == (bundle.products.categories[rows] == bundle.products.categories[rows[0]]).sum()
    np.testing.assert_array_equal(vectors, bundle.index.vectors(rows[found]))


def _unstored(bundle: Bundle, label: int) -> ProductTable:
    """The bundle's product table as if label's vectors were not stored (a category too large)."""
    arrays = dict(bundle.products.arrays)
    arrays["exact_start"] = arrays["exact_start"].copy()
    arrays["exact_start"][label] = -1
    return ProductTable(arrays)


def _queries(bundle: Bundle, n: int = 20) -> np.ndarray:
    rows = np.random.default_rng(0).choice(len(bundle.products), n, replace=False)
    v = (
        bundle.index.vectors(rows)
        + np.random.default_rng(1).standard_normal((n, bundle.embedding_dim)) * 0.03
    )
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_category_filters_match_exact_search(bundle: Bundle) -> None:
    """Every category of the tiny bundle is small: searched exactly over its stored vectors."""
    views = bundle.index.views
    for label in range(len(bundle.labels)):
        where = bundle.products.category_filter([label], views)
        assert where.vectors is not None
        assert set(where.rows.tolist()) == set(np.flatnonzero(bundle.products.categories == label).tolist())
        for q in _queries(bundle, 3):
            got, _ = bundle.index.filtered_search(q, 10, where)
            exact, _ = bundle.index.exact_search(q, where.rows, 10)
            assert len(set(got.tolist()) & set(exact.tolist())) >= len(exact) - 1  # f16 ties may swap one


def test_overfetch_of_a_large_filter_keeps_recall(bundle: Bundle) -> None:
    """A filter without stored vectors (a large category) goes through the ANN index, over-fetched."""
    labels = list(range(0, len(bundle.labels), 2))  # half the categories: a filter over ~half the products
    where = replace(bundle.products.category_filter(labels, bundle.index.views), vectors=None)
    recalls = []
    for q in _queries(bundle):
        got, _ = bundle.index.filtered_search(q, 10, where)
        exact, _ = bundle.index.exact_search(q, where.rows, 10)
        assert where.allows(got).all() and len(got) == 10
        recalls.append(len(set(got.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(recalls) >= 0.95


def test_coarse_scan_of_a_stored_filter_keeps_recall(bundle: Bundle) -> None:
    """A stored filter of more than RESCORED x k x views vectors is scanned in its coarse projection, and
    the best of that scan rescored in full."""
    from server.runtime.index import RESCORED

    labels = list(range(12))
    where = bundle.products.category_filter(labels, bundle.index.views)
    assert where.vectors is not None and len(where.vectors) > RESCORED * 10 * bundle.index.views
    recalls = []
    for q in _queries(bundle):
        got, scores = bundle.index.filtered_search(q, 10, where)
        exact, _ = bundle.index.exact_search(q, where.rows, 10)
        assert where.allows(got).all() and len(got) == 10 and np.all(np.diff(scores) <= 1e-6)
        recalls.append(len(set(got.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(recalls) >= 0.95
