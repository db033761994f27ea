"""AsyncClient: Sift's calls over one long-lived grpc.aio.Channel, for asyncio code. The same methods as
Client (sift_client/sync_client.py), awaited."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server._proto.sift.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    intent_pb2_grpc,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from sift_client import wire
from sift_client.channel import (
    DEFAULT_RETRY,
    HEALTH_SERVICES,
    TLS,
    RetryPolicy,
    channel_options,
    open_aio_channel,
)
from sift_client.errors import SiftError
from sift_client.inputs import Candidate, IntentQuery, SearchQuery
from sift_client.results import Embedding, Hits, Intent, ModelInfo, Relevance, Reload


class AsyncClient:
    """Sift's calls over one grpc.aio channel: open one per event loop and share it across tasks (a channel
    is a pool of HTTP/2 connections that reconnects by itself; one per call pays a handshake each time).

    `deadline` is the seconds each call gets unless it passes `timeout` (Sift answers in about a
    millisecond; a call without a deadline waits forever on a hung connection). `api_key` is sent as
    `authorization: Bearer <key>`. Every call takes `request_id` (sent as x-request-id, made up when not
    given) and `traceparent` (W3C trace context). A failed call raises SiftError, after the retries of
    `retry` (see sift_client/channel.py). `channel` replaces the channel the other arguments would open.
    """

    def __init__(
        self,
        address: str = "localhost:50051",
        *,
        deadline: float = 0.5,
        api_key: str | None = None,
        tls: TLS | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        keepalive_time_ms: int = 60_000,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.channel = channel or open_aio_channel(address, channel_options(retry, keepalive_time_ms), tls)
        self.deadline = deadline
        self.api_key = api_key
        self._intent = intent_pb2_grpc.IntentServiceStub(self.channel)
        self._relevance = relevance_pb2_grpc.RelevanceServiceStub(self.channel)
        self._retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self.channel)
        self._info = info_pb2_grpc.InfoServiceStub(self.channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        timeout: float | None,
        request_id: str | None,
        traceparent: str | None,
        authorization: str | None = None,
    ) -> Any:
        metadata = wire.metadata(self.api_key, request_id, traceparent, authorization)
        try:
            return await method(
                request, timeout=self.deadline if timeout is None else timeout, metadata=metadata
            )
        except grpc.RpcError as e:
            raise SiftError.from_rpc_error(e, metadata[0][1]) from None

    async def classify_intent(
        self,
        query: str,
        top_k: int = 0,
        min_score: float = 0.0,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> Intent:
        request = wire.intent_request(IntentQuery(query, top_k, min_score))
        return wire.intent(
            await self._call(self._intent.ClassifyIntent, request, timeout, request_id, traceparent)
        )

    async def classify_intent_batch(
        self,
        items: Sequence[IntentQuery | str],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> list[Intent]:
        """One answer per item, in order; a bad item fails the whole call, its message naming `items[i]`."""
        request = wire.intent_batch_request(items)
        reply = await self._call(self._intent.ClassifyIntentBatch, request, timeout, request_id, traceparent)
        return [wire.intent(item) for item in reply.items]

    async def search(
        self,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        k: int = 0,
        category: str = "",
        mode: str = "",
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> Hits:
        request = wire.search_request(SearchQuery(query, vector, k, category, mode))
        return wire.hits(await self._call(self._retrieval.Search, request, timeout, request_id, traceparent))

    async def search_batch(
        self,
        items: Sequence[SearchQuery | str],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> list[Hits]:
        """One answer per item, in order; a bad item fails the whole call, its message naming `items[i]`."""
        request = wire.search_batch_request(items)
        reply = await self._call(self._retrieval.SearchBatch, request, timeout, request_id, traceparent)
        return [wire.hits(item) for item in reply.items]

    async def embed_query(
        self,
        query: str,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> Embedding:
        request = retrieval_pb2.EmbedQueryRequest(query=query)
        reply = await self._call(self._retrieval.EmbedQuery, request, timeout, request_id, traceparent)
        return wire.embedding(reply)

    async def embed_query_batch(
        self,
        queries: Sequence[str],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> list[Embedding]:
        """One vector per query, in order; a bad query fails the whole call, naming `items[i].query`."""
        request = wire.embed_batch_request(queries)
        reply = await self._call(self._retrieval.EmbedQueryBatch, request, timeout, request_id, traceparent)
        return [wire.embedding(item) for item in reply.items]

    async def score_relevance(
        self,
        query: str,
        candidates: Sequence[Candidate | str],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> Relevance:
        """One score per candidate, in order; a bare string is a product id."""
        request = wire.relevance_request(query, candidates)
        reply = await self._call(self._relevance.ScoreRelevance, request, timeout, request_id, traceparent)
        return wire.relevance(reply)

    async def get_model_info(
        self, *, timeout: float | None = None, request_id: str | None = None, traceparent: str | None = None
    ) -> ModelInfo:
        request = info_pb2.GetModelInfoRequest()
        return wire.model_info(
            await self._call(self._info.GetModelInfo, request, timeout, request_id, traceparent)
        )

    async def reload_bundle(
        self,
        path: str = "",
        *,
        admin_token: str | None = None,
        timeout: float = 120.0,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> Reload:
        """Loads the bundle at `path` on the server (empty: its configured one). Not retried. Without an
        admin token the server accepts it from localhost only."""
        request = admin_pb2.ReloadBundleRequest(path=path)
        authorization = f"Bearer {admin_token}" if admin_token else None
        reply = await self._call(
            self._admin.ReloadBundle, request, timeout, request_id, traceparent, authorization
        )
        return wire.reload(reply)

    async def wait_until_serving(self, timeout: float = 10.0) -> None:
        """At start-up: wait for a connection and for the server and each Sift service to report SERVING;
        raises SiftError (UNAVAILABLE, or DEADLINE_EXCEEDED) when they do not within `timeout`."""
        for service in HEALTH_SERVICES:
            try:
                # wait_for_ready: wait for the connection (up to the deadline) instead of failing at once.
                reply = await self._health.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=timeout,
                    metadata=wire.metadata(self.api_key, None, None),
                    wait_for_ready=True,
                )
            except grpc.RpcError as e:
                raise SiftError.from_rpc_error(e, "") from None
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                raise SiftError(grpc.StatusCode.UNAVAILABLE, f"{service or 'server'} is {status}", "")

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
