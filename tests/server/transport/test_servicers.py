"""The servicers on the wire, through a real sift-serve: a bundle's own grades (Score.grade_name and
GetModelInfo.grades) beside the original three-grade `Grade` enum that older clients read."""

from __future__ import annotations

from pathlib import Path

from server._proto.sift.v1 import (
    common_pb2,
    info_pb2,
    info_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
)
from server.bundle import load_bundle
from tests.conftest import LiveServer, start_server, stop_server
from tests.server.service.test_relevance import as_esci_bundle

# The mapping relevance.proto promises: each grade's nearest of the original three.
LEGACY = {
    "irrelevant": relevance_pb2.GRADE_IRRELEVANT,
    "complement": relevance_pb2.GRADE_PARTIAL,
    "substitute": relevance_pb2.GRADE_PARTIAL,
    "partial": relevance_pb2.GRADE_PARTIAL,
    "exact": relevance_pb2.GRADE_EXACT,
}


def _call(
    server: LiveServer, bundle: Path
) -> tuple[info_pb2.GetModelInfoResponse, list[relevance_pb2.Score]]:
    """GetModelInfo, and ScoreRelevance of a product's title against that product (by id and by title)
    and nine others by id."""
    products = load_bundle(bundle).products
    query = products.titles[0]
    candidates = [relevance_pb2.Candidate(product_id=products.ids[0]), relevance_pb2.Candidate(title=query)]
    step = len(products.ids) // 10
    candidates += [relevance_pb2.Candidate(product_id=products.ids[i * step]) for i in range(1, 10)]
    with server.channel() as channel:
        info = info_pb2_grpc.InfoServiceStub(channel).GetModelInfo(info_pb2.GetModelInfoRequest())
        reply = relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(
            relevance_pb2.ScoreRelevanceRequest(query=query, candidates=candidates)
        )
    assert len(reply.scores) == len(candidates)
    return info, list(reply.scores)


def test_four_grade_bundle_answers_with_esci_grades(bundle_copy: Path) -> None:
    as_esci_bundle(bundle_copy, "complement")
    server = start_server(bundle_copy)
    try:
        info, scores = _call(server, bundle_copy)
    finally:
        stop_server(server)
    assert list(info.grades) == ["irrelevant", "complement", "substitute", "exact"]
    assert all(s.grade == LEGACY[s.grade_name] for s in scores)
    by_model = [s for s in scores if s.source == common_pb2.ANSWER_SOURCE_MODEL]
    assert by_model and all(s.grade_name == "complement" for s in by_model)
    assert all(s.grade == relevance_pb2.GRADE_PARTIAL for s in by_model)
    # The product's own title is a golden rule's exact match, by id and by title alike.
    assert [s.grade_name for s in scores[:2]] == ["exact", "exact"]
    assert [s.grade for s in scores[:2]] == [relevance_pb2.GRADE_EXACT] * 2


def test_three_grade_bundle_answers_as_before(live_server: LiveServer, tiny_bundle: Path) -> None:
    info, scores = _call(live_server, tiny_bundle)
    assert list(info.grades) == ["irrelevant", "partial", "exact"]
    assert all(s.grade == LEGACY[s.grade_name] for s in scores)
    assert {s.grade_name for s in scores} <= {"irrelevant", "partial", "exact"}
    assert scores[0].grade == relevance_pb2.GRADE_EXACT and scores[0].grade_name == "exact"
