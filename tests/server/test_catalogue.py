"""The product arrays as the server reads them: id lookup, string columns, and category filters searched
exactly over stored vectors or over-fetched from the index, against exact search."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.bundle import Bundle, load_bundle


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
