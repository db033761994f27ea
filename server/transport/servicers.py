"""Thin grpc.aio servicers: proto -> plain Python, call the service layer, plain Python -> proto."""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable

import grpc
from google.protobuf import json_format, struct_pb2

from server._proto.sift.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.admission import Admission, Work
from server.errors import PermissionDenied
from server.rules import LEGACY_GRADES
from server.service.admin import AdminService
from server.service.info import InfoService
from server.service.intent import SOURCE_RULE, IntentQuery, IntentResult, IntentService
from server.service.relevance import CandidateInput, RelevanceService
from server.service.retrieval import EmbedResult, RetrievalService, SearchQuery, SearchResult
from server.transport.middleware import deadline_of, rpc

Context = grpc.aio.ServicerContext


def _source(source: str) -> common_pb2.AnswerSource:
    return common_pb2.ANSWER_SOURCE_RULE if source == SOURCE_RULE else common_pb2.ANSWER_SOURCE_MODEL


# Every grade a bundle may have -> the wire enum's nearest of the original three (server/rules.py).
_GRADES = {
    name: relevance_pb2.Grade.Value(f"GRADE_{legacy.upper()}") for name, legacy in LEGACY_GRADES.items()
}


# The work each call asks for, read from its request for admission (server/admission.py).
def _one(method: str) -> Callable[[object], Work]:
    work = Work.of(method)
    return lambda request: work


def _batch(method: str) -> Callable[[object], Work]:
    """A batch of ClassifyIntent or EmbedQuery items counts as that many single calls."""
    work = Work.of(method)
    return lambda request: work.times(len(request.items))  # type: ignore[attr-defined]


def relevance_work(request: relevance_pb2.ScoreRelevanceRequest) -> Work:
    # The first candidate says whether the call embeds titles or reads known products: counting every
    # candidate's kind would cost a refused call more than the rest of its refusal.
    candidates = request.candidates
    kind = "id" if candidates and candidates[0].product_id else "title"
    return Work.of("ScoreRelevance", **{kind: len(candidates)})


class IntentServicer(intent_pb2_grpc.IntentServiceServicer):
    admission: Admission | None = None

    def __init__(self, service: IntentService, timing_metadata: bool = True) -> None:
        self._service = service
        self.timing_metadata = timing_metadata

    @rpc("ClassifyIntent", _one("ClassifyIntent"))
    async def ClassifyIntent(
        self, request: intent_pb2.ClassifyIntentRequest, context: Context
    ) -> intent_pb2.ClassifyIntentResponse:
        result = await self._service.classify(
            request.query, request.top_k, request.min_score, deadline_of(context)
        )
        return _intent_response(result)

    @rpc("ClassifyIntentBatch", _batch("ClassifyIntent"))
    async def ClassifyIntentBatch(
        self, request: intent_pb2.ClassifyIntentBatchRequest, context: Context
    ) -> intent_pb2.ClassifyIntentBatchResponse:
        items = [IntentQuery(r.query, r.top_k, r.min_score) for r in request.items]
        results = await self._service.classify_batch(items, deadline_of(context))
        return intent_pb2.ClassifyIntentBatchResponse(
            items=[_intent_response(r) for r in results], model_version=results[0].model_version
        )


def _intent_response(result: IntentResult) -> intent_pb2.ClassifyIntentResponse:
    return intent_pb2.ClassifyIntentResponse(
        categories=[
            intent_pb2.Category(id=c.id, path=c.path, probability=c.probability) for c in result.categories
        ],
        source=_source(result.source),
        rule=result.rule,
        model_version=result.model_version,
    )


class RelevanceServicer(relevance_pb2_grpc.RelevanceServiceServicer):
    admission: Admission | None = None

    def __init__(self, service: RelevanceService, timing_metadata: bool = True) -> None:
        self._service = service
        self.timing_metadata = timing_metadata

    @rpc("ScoreRelevance", relevance_work)
    async def ScoreRelevance(
        self, request: relevance_pb2.ScoreRelevanceRequest, context: Context
    ) -> relevance_pb2.ScoreRelevanceResponse:
        candidates = [CandidateInput(product_id=c.product_id, title=c.title) for c in request.candidates]
        result = await self._service.score(request.query, candidates, deadline_of(context))
        response = relevance_pb2.ScoreRelevanceResponse(model_version=result.model_version)
        # Built in place: Score messages made apart and passed as `scores=` are each copied once more
        # (a 100-candidate answer took 2-6x as long to build that way).
        add = response.scores.add
        for s in result.scores:
            grade = s.grade
            add(score=s.score, grade=_GRADES[grade], source=_source(s.source), rule=s.rule, grade_name=grade)
        return response


# The wire's enum -> the service's mode name; an unknown number is passed on as itself to be refused.
_SEARCH_MODES = {
    retrieval_pb2.SEARCH_MODE_UNSPECIFIED: "",
    retrieval_pb2.SEARCH_MODE_DENSE: "dense",
    retrieval_pb2.SEARCH_MODE_LEXICAL: "lexical",
    retrieval_pb2.SEARCH_MODE_HYBRID: "hybrid",
}


# Search's modes cost differently (dense and hybrid embed the query): one cost kind each.
_SEARCH_WORK = {number: Work.of("Search", **{name or "default": 1}) for number, name in _SEARCH_MODES.items()}


def _search_batch_work(request: retrieval_pb2.SearchBatchRequest) -> Work:
    """Each item counts as the single Search of its mode."""
    modes = Counter(_SEARCH_MODES.get(item.mode) or "default" for item in request.items)
    return Work.of("Search", **modes)


def _search_query(request: retrieval_pb2.SearchRequest) -> SearchQuery:
    which = request.WhichOneof("query_input")
    return SearchQuery(
        query=request.query if which == "query" else None,
        vector=list(request.vector.values) if which == "vector" else None,
        k=request.k,
        category=request.category,
        mode=_SEARCH_MODES.get(request.mode, str(request.mode)),
    )


def _search_response(result: SearchResult) -> retrieval_pb2.SearchResponse:
    return retrieval_pb2.SearchResponse(
        hits=[
            retrieval_pb2.Hit(product_id=h.product_id, score=h.score, category=h.category)
            for h in result.hits
        ],
        model_version=result.model_version,
    )


def _embed_response(result: EmbedResult) -> retrieval_pb2.EmbedQueryResponse:
    return retrieval_pb2.EmbedQueryResponse(vector=result.vector.tolist(), model_version=result.model_version)


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    admission: Admission | None = None

    def __init__(self, service: RetrievalService, timing_metadata: bool = True) -> None:
        self._service = service
        self.timing_metadata = timing_metadata

    @rpc("Search", lambda request: _SEARCH_WORK.get(request.mode, _SEARCH_WORK[0]))
    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: Context
    ) -> retrieval_pb2.SearchResponse:
        q = _search_query(request)
        result = await self._service.search(
            q.query, q.vector, q.k, q.category, q.mode, deadline=deadline_of(context)
        )
        return _search_response(result)

    @rpc("EmbedQuery", _one("EmbedQuery"))
    async def EmbedQuery(
        self, request: retrieval_pb2.EmbedQueryRequest, context: Context
    ) -> retrieval_pb2.EmbedQueryResponse:
        return _embed_response(await self._service.embed(request.query, deadline_of(context)))

    @rpc("SearchBatch", _search_batch_work)
    async def SearchBatch(
        self, request: retrieval_pb2.SearchBatchRequest, context: Context
    ) -> retrieval_pb2.SearchBatchResponse:
        items = [_search_query(r) for r in request.items]
        results = await self._service.search_batch(items, deadline_of(context))
        return retrieval_pb2.SearchBatchResponse(
            items=[_search_response(r) for r in results], model_version=results[0].model_version
        )

    @rpc("EmbedQueryBatch", _batch("EmbedQuery"))
    async def EmbedQueryBatch(
        self, request: retrieval_pb2.EmbedQueryBatchRequest, context: Context
    ) -> retrieval_pb2.EmbedQueryBatchResponse:
        results = await self._service.embed_batch([r.query for r in request.items], deadline_of(context))
        return retrieval_pb2.EmbedQueryBatchResponse(
            items=[_embed_response(r) for r in results], model_version=results[0].model_version
        )


class InfoServicer(info_pb2_grpc.InfoServiceServicer):
    def __init__(self, service: InfoService, timing_metadata: bool = True) -> None:
        self._service = service
        self.timing_metadata = timing_metadata

    @rpc("GetModelInfo")
    async def GetModelInfo(
        self, request: info_pb2.GetModelInfoRequest, context: Context
    ) -> info_pb2.GetModelInfoResponse:
        b = self._service.info()
        evaluation = struct_pb2.Struct()
        json_format.ParseDict(b.evaluation, evaluation)
        return info_pb2.GetModelInfoResponse(
            bundle_version=b.version,
            schema_version=b.schema_version,
            created_at=b.created_at,
            code_version=b.code_version,
            components=[
                info_pb2.Component(name=c.name, file=c.file, sha256=c.sha256, description=c.description)
                for c in b.components.values()
            ],
            labels=[info_pb2.Label(id=label.id, path=label.path) for label in b.labels],
            embedding_dim=b.embedding_dim,
            num_products=len(b.products.ids) if b.products else 0,
            evaluation=evaluation,
            model_version=b.version,
            search_modes=list(b.search_modes),
            search_default_mode=b.search_default_mode,
            grades=list(b.grades) if b.relevance is not None else [],
        )


_LOCAL_PEERS = ("ipv4:127.", "ipv6:[::1]", "unix:")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Admin calls come from localhost, or carry `authorization: Bearer <admin_token>` when one is set."""

    def __init__(self, service: AdminService, token: str = "", timing_metadata: bool = True) -> None:
        self._service = service
        self._token = token
        self.timing_metadata = timing_metadata

    def _authorize(self, context: Context) -> None:
        if self._token:
            sent = dict(context.invocation_metadata() or ()).get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {self._token}".encode()):
                raise PermissionDenied("admin calls need `authorization: Bearer <admin token>` metadata")
        elif not context.peer().startswith(_LOCAL_PEERS):
            raise PermissionDenied("admin calls are accepted from localhost only (no admin token is set)")

    @rpc("ReloadBundle")
    async def ReloadBundle(
        self, request: admin_pb2.ReloadBundleRequest, context: Context
    ) -> admin_pb2.ReloadBundleResponse:
        self._authorize(context)
        result = await self._service.reload(request.path)
        return admin_pb2.ReloadBundleResponse(
            bundle_version=result.bundle_version,
            previous_version=result.previous_version,
            load_seconds=result.load_seconds,
        )
