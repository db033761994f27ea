"""The MLServer peer answers ClassifyIntent's question exactly as Sift does, over the raw-bytes gRPC path the
load generator uses."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from benchmarks import peer
from server._proto.sift.v1 import intent_pb2, intent_pb2_grpc
from tests.conftest import LiveServer

pytestmark = pytest.mark.skipif(
    not (peer.DEFAULT_VENV / "bin" / "mlserver").exists(),
    reason=(
        f"no MLServer venv at {peer.DEFAULT_VENV}; create it with "
        "`.venv/bin/python -c 'from benchmarks import peer; peer.ensure_venv(peer.DEFAULT_VENV)'`"
    ),
)

QUERY = "velvet accent chair"


@pytest.mark.slow
def test_mlserver_top_categories_equal_sift(
    tiny_bundle: Path, live_server: LiveServer, tmp_path: Path
) -> None:
    with live_server.channel() as channel:
        request = intent_pb2.ClassifyIntentRequest(query=QUERY, top_k=peer.TOP_K)
        expected = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(request, timeout=10).categories
    [payload] = peer.infer_payloads(peer.DEFAULT_VENV, [QUERY], peer.MODEL_NAME)
    port = peer.free_port()
    process = peer.start_mlserver(peer.DEFAULT_VENV, tiny_bundle, tmp_path, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # No serializers: request and reply are bytes, exactly as the load generator sends them.
            reply = channel.unary_unary(peer.MODEL_INFER_PATH)(payload, timeout=10)
    finally:
        peer.stop_mlserver(process)
    [answer] = peer.decode_responses(peer.DEFAULT_VENV, [reply])
    assert answer["label_ids"] == [c.id for c in expected]
    assert answer["probabilities"] == pytest.approx([c.probability for c in expected], rel=1e-5)
