"""The pure helpers of the report's real-data parts (real_queries, wands, flipkart), on tiny hand-made
inputs: no data set is read and no bundle is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from training.report.context import DEFAULT_PARTS, PARTS, ReportSettings
from training.report.real_common import (
    UNKNOWN,
    UNMAPPED,
    distinct,
    exact_top_k,
    label_mapper,
    precision_at_k_by_category,
    weighted_vote,
)
from training.report.real_flipkart import distinct_names
from training.report.real_queries import (
    EMBED_BUDGET_MS,
    choose_query_model,
    graph_remap,
    overlap_by_match,
    overlap_per_query,
    same_export,
)

PATHS = [
    "Accent Chests / Cabinets",
    "Furniture > Accent Chairs",
    "Bags, Wallets & Belts",
    "Clothing > Shorts & 3 > 4ths",
]


def test_label_mapper_matches_path_id_and_leaf() -> None:
    to_label = label_mapper(PATHS)
    assert to_label("Accent Chests / Cabinets") == 0  # exact path: "/" inside a WANDS class name
    assert to_label("furniture >> accent chairs") == 1  # by id, catalogue-style separators
    assert to_label("Accent Chairs") == 1  # unique leaf, as the taxonomy loader maps query classes
    assert to_label("Bags, Wallets & Belts") == 2
    assert to_label("Clothing / Shorts & 3/4ths") == 3  # the catalogue loader reads "/" as a level separator
    assert to_label("") == UNKNOWN
    assert to_label("  ") == UNKNOWN
    assert to_label("Sunglasses") == UNMAPPED


def test_label_mapper_refuses_an_ambiguous_leaf() -> None:
    to_label = label_mapper(["A > Rugs", "B > Rugs"])
    assert to_label("Rugs") == UNMAPPED
    assert to_label("B > Rugs") == 1


def test_weighted_vote_sums_weights_per_class() -> None:
    labels = np.array([[0, 1, 1], [2, 0, 0], [1, 1, 0]])
    weights = np.array([[0.9, 0.5, 0.5], [0.9, 0.4, 0.4], [0.0, 0.0, 0.0]])
    # Row 0: class 1 has 1.0 against 0.9; row 1: class 2 has 0.9 against 0.8; row 2: no evidence.
    assert weighted_vote(labels, weights, 3, fallback=2).tolist() == [1, 2, 2]


def test_weighted_vote_ignores_padding_and_negative_weights_and_breaks_ties_low() -> None:
    labels = np.array([[-1, 2, 1], [0, 1, 2]])
    weights = np.array([[5.0, 0.5, 0.5], [-1.0, 0.3, 0.3]])
    assert weighted_vote(labels, weights, 3, fallback=0).tolist() == [1, 1]


def test_precision_at_k_by_category_counts_short_lists_as_misses() -> None:
    categories = np.array([0, 0, 1, 2])
    top = np.array([[0, 1, 2], [2, 3, -1], [-1, -1, -1]])
    gold = np.array([0, 1, 0])
    assert precision_at_k_by_category(top, categories, gold, k=3).tolist() == pytest.approx(
        [2 / 3, 1 / 3, 0.0]
    )
    # Asked for 4 hits but given 3 columns: the missing one is a miss.
    assert precision_at_k_by_category(top[:1], categories, gold[:1], k=4).tolist() == [0.5]


def test_exact_top_k_is_cosine_order() -> None:
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    rows, sims = exact_top_k(np.array([[0.0, 1.0], [1.0, 0.0]]), docs, 2)
    assert rows.tolist() == [[1, 2], [0, 2]]
    np.testing.assert_allclose(sims, [[1.0, 0.8], [1.0, 0.6]])


def test_overlap_per_query_ignores_padding() -> None:
    a = np.array([[1, 2, 3, -1], [4, 5, 6, 7]])
    b = np.array([[3, 2, 9, -1], [0, 1, 2, 3]])
    assert overlap_per_query(a, b, k=4).tolist() == [0.5, 0.0]


def test_overlap_by_match_bands_queries_by_the_teachers_best_cosine() -> None:
    overlap = np.array([0.2, 0.4, 0.9, 1.0, 0.6])
    best = np.array([0.1, 0.35, 0.65, 0.9, 0.45])
    rows = {r["teacher_best_cosine"]: r for r in overlap_by_match(overlap, best)}
    assert set(rows) == {"0.0 to 0.4", "0.4 to 0.5", ">= 0.6"}  # no query in 0.5-0.6: no row
    assert rows["0.0 to 0.4"]["queries"] == 2
    assert rows["0.0 to 0.4"]["overlap_at_10"] == pytest.approx(0.3)
    assert rows[">= 0.6"]["overlap_at_10"] == pytest.approx(0.95)


def test_distinct_and_distinct_names_vote_once_per_name() -> None:
    assert distinct(["Red Shoe", "red  shoe ", "", "Blue"]) == ["Red Shoe", "Blue"]
    rows = [
        {"product_name": "Red Shoe", "cat_l1": "Footwear"},
        {"product_name": "red shoe", "cat_l1": "Clothing"},
        {"product_name": "RED SHOE", "cat_l1": "Clothing"},
        {"product_name": "Ring", "cat_l1": "Jewellery"},
    ]
    names, gold, two = distinct_names(rows, label_mapper(["Footwear", "Clothing"]))
    assert names == ["Red Shoe", "Ring"]
    assert gold.tolist() == [1, UNMAPPED]  # the most frequent category; Jewellery is not a bundle label
    assert two == 1


def test_graph_remap_reads_the_pruned_vocabulary(tmp_path: Path) -> None:
    remap = np.array([0, 1, 1, 2, 1], dtype=np.int64)  # ids 2 and 4 are dropped to [UNK] (new id 1)
    table = numpy_helper.from_array(np.zeros((3, 2), dtype=np.float32), "embeddings")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["remap", "input_ids"], ["new_ids"]),
            helper.make_node("Gather", ["embeddings", "new_ids"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "t", 2])],
        [numpy_helper.from_array(remap, "remap"), table],
    )
    onnx.save(helper.make_model(graph), tmp_path / "student.onnx")
    assert graph_remap(tmp_path / "student.onnx").tolist() == remap.tolist()
    plain = helper.make_graph(
        [helper.make_node("Gather", ["embeddings", "input_ids"], ["out"])],
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "t", 2])],
        [table],
    )
    onnx.save(helper.make_model(plain), tmp_path / "plain.onnx")
    assert graph_remap(tmp_path / "plain.onnx") is None


def test_bundle_parts_are_known_but_not_run_by_default() -> None:
    settings = ReportSettings(_cli_parse_args=[])
    assert settings.parts == DEFAULT_PARTS == ("intent", "catalogue", "layers", "latency")
    assert {"real_queries", "wands", "flipkart"} <= set(PARTS)
    given = ReportSettings(_cli_parse_args=["--parts", '["wands"]', "--wands-bundle", "/tmp/b"])
    assert given.parts == ("wands",) and given.wands_bundle == Path("/tmp/b")


def test_query_model_choice_is_the_best_cosine_within_the_budget() -> None:
    def row(model: str, cosine: float, source: str = "all (distinct)") -> dict:
        return {"model": model, "source": source, "mean_cosine": cosine}

    rows = [row("served: big", 0.95), row("before: small", 0.60), row("served: big", 0.10, "WANDS queries")]
    fast, slow = {"p50_ms": EMBED_BUDGET_MS / 10}, {"p50_ms": EMBED_BUDGET_MS * 2}
    within = choose_query_model(rows, {"served: big": fast, "before: small": fast})
    assert within["chosen"] == "served: big" and within["served_is_chosen"]
    # Over the budget, the better model loses to the one within it.
    over = choose_query_model(rows, {"served: big": slow, "before: small": fast})
    assert over["chosen"] == "before: small" and not over["served_is_chosen"]
    assert [c["within_budget"] for c in over["candidates"]] == [False, True]
    # None within: the fastest.
    none = choose_query_model(rows, {"served: big": slow, "before: small": {"p50_ms": EMBED_BUDGET_MS * 3}})
    assert none["chosen"] == "served: big"


def _real_queries_part(**extra: Any) -> dict[str, Any]:
    """A real_queries part's result with no rows, for the section's sentences."""
    return {
        "command": "c",
        "seconds": 1,
        "bundle": "b",
        "bundle_version": "v",
        "sources": {},
        "teacher": "t",
        "index_products": 1,
        "targets": {"mean_cosine": 0.9, "overlap_at_10": 0.7},
        "rows": [],
        "tokens": {"measures": "m", "rows": []},
        **extra,
    }


def test_query_model_verdict_says_training_ships_the_presets_model() -> None:
    from training.report.markdown_real import real_queries_section

    def verdict(served_is_chosen: bool) -> str:
        choice = {
            "rule": "r",
            "budget_ms": 1.0,
            "candidates": [],
            "chosen": "m",
            "served_is_chosen": served_is_chosen,
        }
        part = _real_queries_part(choice=choice)
        return next(x for x in real_queries_section(part) if x.startswith("Chosen:"))

    assert verdict(True) == "Chosen: m; the bundle serves it."
    # Retraining would ship the same model: the verdict names what decides it instead of saying "retrain".
    assert "preset's `query_student`" in verdict(False) and "retrain" not in verdict(False)


def test_query_levers_section_marks_the_presets_choice() -> None:
    from training.report.markdown_real import query_levers_section

    row = {
        "cosine_ci95": [0.8, 0.9],
        "cosine_p10": 0.7,
        "overlap_at_10": 0.7,
        "overlap_ci95": [0.68, 0.72],
        "final_loss": 0.1,
        "train_seconds": 600,
        "int8": "int8",
    }
    r = {
        "command": "sift-train report --parts '[\"query_levers\"]'",
        "seconds": 1800,
        "preset": "default",
        "distillation_texts": 71000,
        "teacher": "MiniLM",
        "real_queries": 793,
        "products": 6000,
        "latency_rounds": 3,
        "rows": [
            {**row, "layers": [0, 5], "shipped_by_preset": False, "mean_cosine": 0.85},
            {**row, "layers": [0, 2, 4], "shipped_by_preset": True, "mean_cosine": 0.88},
        ],
    }
    r["rows"][0] |= {"embed_p50_ms": 0.25, "embed_x_preset": 0.7}
    r["rows"][1] |= {"embed_p50_ms": 0.36, "embed_x_preset": 1.0}
    text = "\n".join(query_levers_section(r))
    assert "| 0, 2, 4 (the preset's) | 0.880 |" in text
    assert "| 0, 5 | 0.850 |" in text
    assert "| 0.250 | 0.700 |" in text and "| 0.360 | 1.000 |" in text


def test_an_fp32_export_is_the_served_students_only_when_its_vectors_are_close() -> None:
    rng = np.random.default_rng(0)
    served = rng.standard_normal((50, 16)).astype(np.float32)
    # int8 moves each vector a little: still the same export.
    assert same_export(served, served + 0.05 * rng.standard_normal(served.shape).astype(np.float32))
    # Another student's vectors (a bundle replaced without its .fp32 sibling): left out.
    assert not same_export(served, rng.standard_normal(served.shape).astype(np.float32))


def test_real_queries_section_says_what_int8_costs_when_the_fp32_export_was_measured() -> None:
    from training.report.markdown_real import real_queries_section

    sweep = {
        "exact_overlap_at_10": {"mean": 0.695, "ci95": [0.681, 0.707]},
        "served_expansion": 64,
        "rows": [],
    }
    relevance = {"queries": 2, "products": 1, "rows": []}
    part = _real_queries_part(index={"expansions": sweep, "relevance_cosine": relevance})
    assert not any("before int8" in line for line in real_queries_section(part))
    sweep["fp32_exact_overlap_at_10"] = {"mean": 0.703, "ci95": [0.69, 0.716]}
    part["index"]["fp32_embed"] = {"p50_ms": 2.116}
    part["index"]["served_embed"] = {"p50_ms": 0.604}
    line = next(x for x in real_queries_section(part) if "before int8" in x)
    assert "0.703 (0.690-0.716)" in line and "2.116 ms" in line and "0.604 ms" in line
