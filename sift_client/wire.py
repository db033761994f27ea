"""Plain Python to request messages and response messages back to the dataclasses of results.py, shared
by the sync and asyncio clients.

The messages are the stubs generated from protos/sift/v1 that ship in the server package
(`server._proto`): importing them runs no server code (both packages' __init__ files are empty, and
tests/sift_client/test_imports.py checks it). One copy of the stubs: a second generated copy would
register the same .proto files twice in protobuf's descriptor pool, which fails in a process that imports
both.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.protobuf import json_format

from server._proto.sift.v1 import (
    admin_pb2,
    common_pb2,
    info_pb2,
    intent_pb2,
    relevance_pb2,
    retrieval_pb2,
)
from sift_client.inputs import Candidate, IntentQuery, SearchQuery
from sift_client.results import (
    Category,
    Component,
    Embedding,
    Hit,
    Hits,
    Intent,
    Label,
    ModelInfo,
    Relevance,
    Reload,
    Score,
)

SEARCH_MODES = {
    "": retrieval_pb2.SEARCH_MODE_UNSPECIFIED,
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "lexical": retrieval_pb2.SEARCH_MODE_LEXICAL,
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
}
_SOURCES = {common_pb2.ANSWER_SOURCE_MODEL: "model", common_pb2.ANSWER_SOURCE_RULE: "rule"}
_GRADES = {
    relevance_pb2.GRADE_EXACT: "exact",
    relevance_pb2.GRADE_PARTIAL: "partial",
    relevance_pb2.GRADE_IRRELEVANT: "irrelevant",
}


def metadata(
    api_key: str | None, request_id: str | None, traceparent: str | None, authorization: str | None = None
) -> tuple[tuple[str, str], ...]:
    """A call's metadata, and its request id (made here when the caller gives none): Sift logs the call
    under `x-request-id` and echoes it; `traceparent` (W3C trace context) joins the caller's trace; the API
    key goes as `authorization: Bearer <key>` (`authorization` overrides it: the admin token)."""
    pairs = [("x-request-id", request_id or uuid.uuid4().hex)]
    if authorization or api_key:
        pairs.append(("authorization", authorization or f"Bearer {api_key}"))
    if traceparent:
        pairs.append(("traceparent", traceparent))
    return tuple(pairs)


# Requests ------------------------------------------------------------------------------------------------


def intent_request(item: IntentQuery) -> intent_pb2.ClassifyIntentRequest:
    return intent_pb2.ClassifyIntentRequest(query=item.query, top_k=item.top_k, min_score=item.min_score)


def intent_batch_request(items: Sequence[IntentQuery | str]) -> intent_pb2.ClassifyIntentBatchRequest:
    return intent_pb2.ClassifyIntentBatchRequest(
        items=[intent_request(IntentQuery(i) if isinstance(i, str) else i) for i in items]
    )


def search_request(item: SearchQuery) -> retrieval_pb2.SearchRequest:
    if (item.query is None) == (item.vector is None):
        raise ValueError("a search has a query text or a vector, not both or neither")
    if item.mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {sorted(SEARCH_MODES)}, got {item.mode!r}")
    request = retrieval_pb2.SearchRequest(k=item.k, category=item.category, mode=SEARCH_MODES[item.mode])
    if item.vector is not None:
        request.vector.values.extend(item.vector)
    else:
        request.query = item.query
    return request


def search_batch_request(items: Sequence[SearchQuery | str]) -> retrieval_pb2.SearchBatchRequest:
    return retrieval_pb2.SearchBatchRequest(
        items=[search_request(SearchQuery(i) if isinstance(i, str) else i) for i in items]
    )


def embed_batch_request(queries: Sequence[str]) -> retrieval_pb2.EmbedQueryBatchRequest:
    return retrieval_pb2.EmbedQueryBatchRequest(
        items=[retrieval_pb2.EmbedQueryRequest(query=q) for q in queries]
    )


def relevance_request(
    query: str, candidates: Sequence[Candidate | str]
) -> relevance_pb2.ScoreRelevanceRequest:
    """A bare string is a product id."""
    wire = []
    for c in candidates:
        if isinstance(c, str):
            c = Candidate(product_id=c)
        wire.append(
            relevance_pb2.Candidate(product_id=c.product_id)
            if c.product_id
            else relevance_pb2.Candidate(title=c.title)
        )
    return relevance_pb2.ScoreRelevanceRequest(query=query, candidates=wire)


# Responses -----------------------------------------------------------------------------------------------


def intent(reply: intent_pb2.ClassifyIntentResponse) -> Intent:
    return Intent(
        [Category(c.id, c.path, c.probability) for c in reply.categories],
        _SOURCES.get(reply.source, "unspecified"),
        reply.rule,
        reply.model_version,
    )


def hits(reply: retrieval_pb2.SearchResponse) -> Hits:
    return Hits([Hit(h.product_id, h.score, h.category) for h in reply.hits], reply.model_version)


def embedding(reply: retrieval_pb2.EmbedQueryResponse) -> Embedding:
    return Embedding(list(reply.vector), reply.model_version)


def relevance(reply: relevance_pb2.ScoreRelevanceResponse) -> Relevance:
    return Relevance(
        [
            Score(
                s.score,
                _GRADES.get(s.grade, "unspecified"),
                _SOURCES.get(s.source, "unspecified"),
                s.rule,
                s.grade_name,
            )
            for s in reply.scores
        ],
        reply.model_version,
    )


def model_info(reply: info_pb2.GetModelInfoResponse) -> ModelInfo:
    return ModelInfo(
        bundle_version=reply.bundle_version,
        schema_version=reply.schema_version,
        created_at=reply.created_at,
        code_version=reply.code_version,
        components=[Component(c.name, c.file, c.sha256, c.description) for c in reply.components],
        labels=[Label(label.id, label.path) for label in reply.labels],
        embedding_dim=reply.embedding_dim,
        num_products=reply.num_products,
        evaluation=json_format.MessageToDict(reply.evaluation),
        search_modes=list(reply.search_modes),
        search_default_mode=reply.search_default_mode,
        grades=tuple(reply.grades),
    )


def reload(reply: admin_pb2.ReloadBundleResponse) -> Reload:
    return Reload(reply.bundle_version, reply.previous_version, reply.load_seconds)
