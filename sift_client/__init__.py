"""A Python client of Sift: typed methods for every call, batches included, sync and asyncio.

    from sift_client import Client, SearchQuery

    with Client("localhost:50051", deadline=0.5) as sift:
        intent = sift.classify_intent("oak coffee table", top_k=3)
        rewrites = sift.classify_intent_batch(["oak coffee table", "oak coffee tables", "wood coffee table"])
        hits = sift.search_batch([SearchQuery("oak coffee table", k=5), SearchQuery("oak", mode="dense")])

    async with AsyncClient("localhost:50051") as sift:
        vectors = await sift.embed_query_batch(["oak", "velvet chair"])

One long-lived channel per client with retries (UNAVAILABLE, and RESOURCE_EXHAUSTED after the server's
`grpc-retry-pushback-ms`), retry throttling, keepalive and TLS (sift_client/channel.py); a deadline on every
call; `api_key` sent as `authorization: Bearer <key>`; `x-request-id` and `traceparent` per call. A failed
call raises SiftError with its gRPC status code and the server's message. Imports grpc and the generated
stubs only: no server, torch or training code.
"""

from sift_client.async_client import AsyncClient
from sift_client.channel import TLS, RetryPolicy
from sift_client.errors import SiftError
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
from sift_client.sync_client import Client

__all__ = [
    "TLS",
    "AsyncClient",
    "Candidate",
    "Category",
    "Client",
    "Component",
    "Embedding",
    "Hit",
    "Hits",
    "Intent",
    "IntentQuery",
    "Label",
    "ModelInfo",
    "Relevance",
    "Reload",
    "RetryPolicy",
    "Score",
    "SearchQuery",
    "SiftError",
]
