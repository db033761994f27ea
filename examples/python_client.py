"""Calling Sift from a Python search backend: one long-lived channel, retries, deadlines, keepalive, TLS.

    python examples/python_client.py --address localhost:50051 "oak coffee table"
    python examples/python_client.py --address sift:50051 --tls-ca ca.pem --json "velvet accent chair"

The CLI does what a search backend does per user query: classify the query's intent, retrieve products
(filtered to the intent's category when the model is confident), score the hits for relevance and re-rank
them. Each step is one function below; read them in order.

What matters, and where it is:
- **One channel per process, opened once** (`open_channel`). A channel is a pool of HTTP/2 connections that
  reconnects on its own; opening one per request costs a TCP (and TLS) handshake on the hot path.
- **Retries in the service config** (`SERVICE_CONFIG`). gRPC retries transparently, with exponential backoff,
  the status codes listed there. A call gets UNAVAILABLE when a replica shuts down (SIGTERM: its port
  closes after the drain period) or cannot be reached, and RESOURCE_EXHAUSTED when Sift's admission finds
  more estimated work queued than `--admission-target-ms` (or a worker holds `--max-concurrent-requests`
  calls): both are safe to retry, and all Sift calls are idempotent reads. Sift's RESOURCE_EXHAUSTED
  carries `grpc-retry-pushback-ms` trailing metadata; gRPC's retry honours it by itself, waiting that long
  instead of its backoff before the next attempt (a negative value would mean: do not retry).
  Not CANCELLED: gRPC core sends it for calls beyond `--max-pending-requests` (the server's last line of
  defence, which admission keeps from firing) and for calls held when a port closes, and a client cannot
  tell those from its own cancellations; standard policies do not retry it, and neither does this one.
  Not DEADLINE_EXCEEDED: the deadline covers the whole call, every attempt included, so once it has passed
  there is no time left for another attempt; and when Sift itself sheds a call because it cannot meet the
  deadline, an immediate retry with even less time would be shed too, adding load exactly when the server
  is overloaded. `retryThrottling` stops retrying when most calls fail, so a down cluster gets no retry
  storm.
- **A deadline on every call** (`Sift.deadline`): Sift answers in about a millisecond; a call with no
  deadline waits forever on a hung connection. Pick it from your own latency budget.
- **Keepalive** (`channel_options`): pings detect a dead connection (a peer that vanished without a FIN or
  RST, e.g. behind a NAT or a killed node) while calls are in flight. The server decides which pings it
  tolerates: sift-serve allows one ping per 30 s on a connection without calls and answers more with GOAWAY
  `too_many_pings`, which closes the connection. While calls flow, the server's answers reset its ping
  count, so the 60 s keepalive below is safe either way; `keepalive_without_calls=True` also probes idle
  channels.
- **wait_for_ready** (`Sift.wait_until_serving`): off by default, so a call fails fast with UNAVAILABLE
  when no connection can be made (the backend can answer without intent or relevance rather than stall).
  At start-up, wait for the connection and for health SERVING once, with a timeout, before taking traffic.
- **x-request-id** metadata (`Sift._metadata`): Sift puts it on every log line of the call and returns it
  in the trailing metadata, so one user query can be followed through the search stack's logs.
- **TLS** (`open_channel`): `--tls-ca` for a server started with `--tls-cert/--tls-key`, plus
  `--tls-cert/--tls-key` for one that requires client certificates (`--tls-client-ca`, mTLS).

The stubs are the ones `protos/generate.py` writes into the server package (installed with
`pip install -e .`). A project of its own would generate them from `protos/` with
`python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. protos/sift/v1/*.proto`.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server._proto.sift.v1 import (
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

SIFT_SERVICES = ("sift.v1.IntentService", "sift.v1.RelevanceService", "sift.v1.RetrievalService")

# Retries with exponential backoff (grpc waits a random time up to the current backoff before each attempt,
# or exactly the server's grpc-retry-pushback-ms when it sends one), for every method of the Sift services.
# maxAttempts counts the first attempt; grpc caps it at 5. RESOURCE_EXHAUSTED (Sift's admission: busy, come
# back after the pushback) and UNAVAILABLE (a replica stopping or unreachable) only; not CANCELLED (see the
# module docstring). Sift's calls are reads, so a retry cannot do anything twice.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": name} for name in SIFT_SERVICES],
            "retryPolicy": RETRY_POLICY,
            # No "timeout" here: every call sets its own deadline. (With grpcio 1.85.3, a "timeout" beside a
            # retryPolicy sometimes ended a retried call early with DEADLINE_EXCEEDED in our tests.)
        }
    ],
    # Each failed attempt costs a token, each success gives back 0.1: when more than about half of the
    # calls fail, retries stop until successes refill the bucket.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    # With an address that resolves to several replicas (e.g. dns:///sift-headless.search:50051 in
    # Kubernetes), spread calls over all of them; a retry can then land on a replica that is not stopping.
    "loadBalancingConfig": [{"round_robin": {}}],
}


def channel_options(
    keepalive_time_ms: int = 60_000,
    keepalive_timeout_ms: int = 10_000,
    keepalive_without_calls: bool = False,
) -> list[tuple[str, object]]:
    """Channel arguments: the service config above, keepalive, and message caps matching the server's."""
    return [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),  # the default; spelled out because the service config relies on it
        # A ping every keepalive_time_ms while calls are in flight; no answer within keepalive_timeout_ms
        # closes the connection, failing its calls with UNAVAILABLE (which the retry policy then retries).
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        # Off by default: sift-serve allows one ping per 30 s on a connection without calls and answers
        # more with GOAWAY too_many_pings; turn it on with keepalive_time_ms >= 30 s to check idle channels.
        ("grpc.keepalive_permit_without_calls", int(keepalive_without_calls)),
        # How many pings this client sends before it has sent data again; 0 = no limit, so keepalive keeps
        # probing during a long call. The server's limit (one ping per 5 minutes without data) still applies,
        # and each of its answers resets it.
        ("grpc.http2.max_pings_without_data", 0),
        # sift-serve's --max-message-bytes default: 1,000 candidates or hits fit well within it.
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ]


def open_channel(
    address: str,
    *,
    tls_ca: Path | None = None,
    tls_client: tuple[Path, Path] | None = None,
    options: list[tuple[str, object]] | None = None,
) -> grpc.Channel:
    """The process's one channel to Sift. `tls_client` is (key, certificate) PEM files for mTLS."""
    options = channel_options() if options is None else options
    if tls_ca is None:
        return grpc.insecure_channel(address, options=options)
    key, cert = (tls_client[0].read_bytes(), tls_client[1].read_bytes()) if tls_client else (None, None)
    credentials = grpc.ssl_channel_credentials(tls_ca.read_bytes(), key, cert)
    return grpc.secure_channel(address, credentials, options=options)


@dataclass
class Hit:
    product_id: str
    category: str
    similarity: float  # cosine similarity from the index
    relevance: float = 0.0  # the relevance model's score
    grade: str = ""


class Sift:
    """The three calls a search backend makes, over one channel. `deadline` is seconds per call."""

    def __init__(self, channel: grpc.Channel, deadline: float = 0.5) -> None:
        self.channel = channel
        self.deadline = deadline
        self.intent = intent_pb2_grpc.IntentServiceStub(channel)
        self.relevance = relevance_pb2_grpc.RelevanceServiceStub(channel)
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    def wait_until_serving(self, timeout: float = 10.0) -> None:
        """At start-up: wait for a connection and for every Sift service to report SERVING. Raises
        grpc.FutureTimeoutError or grpc.RpcError. wait_for_ready=True makes the health call wait for the
        connection (up to its deadline) instead of failing at once; the hot-path calls below leave it off."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        for service in ("", *SIFT_SERVICES):
            reply = self.health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=True
            )
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                raise RuntimeError(f"{service or 'server'} is {status}")

    @staticmethod
    def _metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
        """The server logs the call under this id and returns it in the trailing metadata (a stub's
        `.with_call(...)` returns the call too: `call.trailing_metadata()`)."""
        return (("x-request-id", request_id or uuid.uuid4().hex),)

    def classify(
        self, query: str, top_k: int = 3, request_id: str | None = None
    ) -> intent_pb2.ClassifyIntentResponse:
        """Intent categories, most probable first."""
        return self.intent.ClassifyIntent(
            intent_pb2.ClassifyIntentRequest(query=query, top_k=top_k),
            timeout=self.deadline,
            metadata=self._metadata(request_id),
        )

    def search(self, query: str, k: int = 10, category: str = "", request_id: str | None = None) -> list[Hit]:
        reply = self.retrieval.Search(
            retrieval_pb2.SearchRequest(query=query, k=k, category=category),
            timeout=self.deadline,
            metadata=self._metadata(request_id),
        )
        return [Hit(h.product_id, h.category, h.score) for h in reply.hits]

    def score(self, query: str, hits: list[Hit], request_id: str | None = None) -> list[Hit]:
        """Scores the hits for relevance (in place) and returns them most relevant first."""
        if not hits:
            return hits
        reply = self.relevance.ScoreRelevance(
            relevance_pb2.ScoreRelevanceRequest(
                query=query, candidates=[relevance_pb2.Candidate(product_id=h.product_id) for h in hits]
            ),
            timeout=self.deadline,
            metadata=self._metadata(request_id),
        )
        for hit, score in zip(hits, reply.scores, strict=True):  # one score per candidate, in order
            hit.relevance, hit.grade = score.score, relevance_pb2.Grade.Name(score.grade)
        return sorted(hits, key=lambda h: h.relevance, reverse=True)


def search_pipeline(sift: Sift, query: str, k: int = 10, confident: float = 0.5) -> dict[str, object]:
    """One user query: intent, retrieval (filtered to the top category when the model is confident),
    relevance re-ranking. All three calls carry the same request id."""
    request_id = uuid.uuid4().hex
    intent = sift.classify(query, request_id=request_id)
    top = intent.categories[0] if intent.categories else None
    category = top.id if top is not None and top.probability >= confident else ""
    hits = sift.search(query, k=k, category=category, request_id=request_id)
    ranked = sift.score(query, hits, request_id=request_id)
    return {
        "query": query,
        "request_id": request_id,
        "model_version": intent.model_version,
        "intent": [{"id": c.id, "path": c.path, "probability": c.probability} for c in intent.categories],
        "category_filter": category,
        "hits": [vars(h) for h in ranked],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", help="a shopping query, e.g. 'oak coffee table'")
    parser.add_argument("--address", default="localhost:50051", help="host:port of sift-serve")
    parser.add_argument("-k", type=int, default=10, help="products to retrieve")
    parser.add_argument("--deadline", type=float, default=0.5, help="seconds per call")
    parser.add_argument("--tls-ca", type=Path, help="CA PEM of a TLS server")
    parser.add_argument("--tls-cert", type=Path, help="client certificate PEM (mTLS)")
    parser.add_argument("--tls-key", type=Path, help="client key PEM (mTLS)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_cert and args.tls_ca is None):
        parser.error("--tls-cert and --tls-key go together, and with --tls-ca")
    client_pair = (args.tls_key, args.tls_cert) if args.tls_cert else None
    with open_channel(args.address, tls_ca=args.tls_ca, tls_client=client_pair) as channel:
        sift = Sift(channel, deadline=args.deadline)
        try:
            sift.wait_until_serving(timeout=5.0)
            result = search_pipeline(sift, args.query, k=args.k)
        except grpc.RpcError as e:
            print(f"{args.address}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        except (grpc.FutureTimeoutError, RuntimeError) as e:
            print(f"{args.address}: not serving: {str(e) or 'no connection within 5 s'}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"query: {result['query']}  (model {result['model_version']}, request id {result['request_id']})")
    for c in result["intent"]:
        print(f"  intent  {c['probability']:.3f}  {c['path']}")
    print(f"search{' in ' + result['category_filter'] if result['category_filter'] else ''}, re-ranked:")
    for h in result["hits"]:
        print(f"  {h['relevance']:.3f} {h['grade']:<16} cos {h['similarity']:.3f}  {h['product_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
