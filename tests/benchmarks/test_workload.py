"""Workloads: mixes, query files in each format, Zipf skew, and the requests they serialize to."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.workload import METHOD_PATHS, CallShape, build_payloads, draw, parse_mix, read_queries
from server._proto.sift.v1 import relevance_pb2, retrieval_pb2


def test_mix_is_normalized_and_bad_names_are_refused() -> None:
    assert parse_mix("intent") == {"intent": 1.0}
    assert parse_mix("intent=0.6,search=0.3,relevance=0.1") == pytest.approx(
        {"intent": 0.6, "search": 0.3, "relevance": 0.1}
    )
    with pytest.raises(ValueError, match="unknown call 'serch'"):
        parse_mix("intent=1,serch=1")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("q.txt", "oak table\n\nbrass lamp\n"),
        ("q.csv", "id,query\n1,oak table\n2,brass lamp\n"),
        ("q.tsv", "query\tclass\noak table\tTables\nbrass lamp\tLamps\n"),
        ("q.jsonl", '{"query": "oak table"}\n{"query": "brass lamp"}\n'),
    ],
)
def test_query_files_in_each_format(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert read_queries(path) == ["oak table", "brass lamp"]


def test_zipf_draw_is_skewed_to_the_head() -> None:
    queries = [f"q{i}" for i in range(1000)]
    counts = Counter(draw(queries, 20_000, "zipf", seed=0))
    assert counts.most_common(1)[0][0] == "q0"
    assert sum(n for _, n in counts.most_common(10)) > 0.3 * 20_000
    assert len(Counter(draw(queries, 20_000, "uniform", seed=0))) > 990


def test_payloads_follow_the_mix_and_carry_the_call_shape() -> None:
    queries = [f"query {i}" for i in range(2000)]
    shape = CallShape(k=7, candidates=3, candidates_by="id")
    mix = parse_mix("intent=0.5,search=0.3,relevance=0.2")
    payloads = build_payloads(mix, queries, shape, seed=0, ids=["a", "b", "c", "d"])
    by_path = Counter(path for path, _ in payloads)
    assert by_path[METHOD_PATHS["intent"]] == pytest.approx(1000, abs=100)
    search = next(p for path, p in payloads if path == METHOD_PATHS["search"])
    assert retrieval_pb2.SearchRequest.FromString(search).k == 7
    rel = next(p for path, p in payloads if path == METHOD_PATHS["relevance"])
    assert [c.product_id for c in relevance_pb2.ScoreRelevanceRequest.FromString(rel).candidates] == [
        "a",
        "b",
        "c",
    ]


def test_the_call_of_a_request_does_not_depend_on_its_query() -> None:
    queries = draw([f"q{i}" for i in range(2000)], 20_000, "zipf", seed=0)
    payloads = build_payloads(parse_mix("intent=0.5,search=0.5"), queries, CallShape(), seed=0)
    head = [path for (path, _), q in zip(payloads, queries, strict=True) if q == "q0"]
    share = sum(path == METHOD_PATHS["intent"] for path in head) / len(head)
    assert 0.4 < share < 0.6  # the most frequent query goes to both calls, about half and half
