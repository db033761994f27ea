"""Calling Sift from a Python search backend with sift_client (installed with `pip install -e .`).

    python examples/python_client.py --address localhost:50051 "oak coffee table"
    python examples/python_client.py --address sift:50051 --tls-ca ca.pem --json "velvet accent chair"

What a search backend does per user query: classify its intent, retrieve products (filtered to the intent's
category when the model is confident), score the hits for relevance and re-rank them; all three calls
carry one request id. The client keeps one channel, retries what is safe to retry (after the server's
pushback), and gives every call a deadline: see sift_client/channel.py. SIFT_API_KEY, when set, is sent as
`authorization: Bearer <key>`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

from sift_client import TLS, Client, SiftError


def search_pipeline(sift: Client, query: str, k: int = 10, confident: float = 0.5) -> dict[str, object]:
    rid = uuid.uuid4().hex
    intent = sift.classify_intent(query, top_k=3, request_id=rid)
    top = intent.categories[0] if intent.categories else None
    category = top.id if top is not None and top.probability >= confident else ""
    hits = sift.search(query, k=k, category=category, request_id=rid).hits
    scores = sift.score_relevance(query, [h.product_id for h in hits], request_id=rid).scores if hits else []
    ranked = sorted(zip(hits, scores, strict=True), key=lambda pair: pair[1].score, reverse=True)
    return {
        "query": query,
        "request_id": rid,
        "model_version": intent.model_version,
        "intent": [asdict(c) for c in intent.categories],
        "category_filter": category,
        "hits": [asdict(h) | {"relevance": s.score, "grade": s.grade} for h, s in ranked],
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
    tls = TLS(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    with Client(
        args.address, deadline=args.deadline, tls=tls, api_key=os.environ.get("SIFT_API_KEY")
    ) as sift:
        try:
            sift.wait_until_serving(timeout=5.0)
            result = search_pipeline(sift, args.query, k=args.k)
        except SiftError as e:
            print(f"{args.address}: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"query: {result['query']}  (model {result['model_version']}, request id {result['request_id']})")
    for c in result["intent"]:  # type: ignore[attr-defined]
        print(f"  intent  {c['probability']:.3f}  {c['path']}")
    print(f"search{' in ' + result['category_filter'] if result['category_filter'] else ''}, re-ranked:")
    for h in result["hits"]:  # type: ignore[attr-defined]
        print(f"  {h['relevance']:.3f} {h['grade']:<10} score {h['score']:.3f}  {h['product_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
