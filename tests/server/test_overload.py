"""Overload and deadlines on a live server: beyond --max-concurrent-requests calls are refused at once with
RESOURCE_EXHAUSTED and the calls admitted are answered; a call whose deadline has passed is refused with
DEADLINE_EXCEEDED and counted; the server keeps serving throughout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from server._proto.sift.v1 import intent_pb2, intent_pb2_grpc, relevance_pb2, relevance_pb2_grpc
from server.admission import Admission, AdmissionPolicy, Work
from server.app import HeavyCalls
from tests.conftest import start_server, stop_server

# ~1,000 titles to featurize: a call slow enough (milliseconds) for many to be in flight at once.
SLOW = relevance_pb2.ScoreRelevanceRequest(
    query="oak coffee table",
    candidates=[relevance_pb2.Candidate(title=f"oak table model {i}") for i in range(1000)],
)


def test_calls_beyond_the_limit_get_resource_exhausted_at_once(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, "--max-concurrent-requests", "2", "--admission-target-ms", "0")
    codes: list[tuple[grpc.StatusCode, str]] = []
    lock = threading.Lock()

    def client() -> None:
        with server.channel() as channel:
            stub = relevance_pb2_grpc.RelevanceServiceStub(channel)
            for _ in range(5):
                try:
                    stub.ScoreRelevance(SLOW, timeout=30)
                    outcome = (grpc.StatusCode.OK, "")
                except grpc.RpcError as e:
                    outcome = (e.code(), e.details())
                with lock:
                    codes.append(outcome)

    try:
        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = {code for code, _ in codes}
        assert seen == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes[:5]
        refused = [details for code, details in codes if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert all("Concurrent RPC limit exceeded" in d for d in refused)
        with server.channel() as channel:  # and it serves normally once the burst is over
            reply = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query="oak"), timeout=5
            )
            assert reply.categories
    finally:
        stop_server(server)


def test_calls_beyond_the_pending_bound_are_refused_by_grpc_core_at_once(tiny_bundle: Path) -> None:
    """A burst far larger than the event loop can pick up: gRPC core holds at most --max-pending-requests
    of the calls the loop has not taken yet and refuses the rest (CANCELLED, core's code), instead of
    queueing them for seconds."""
    server = start_server(
        tiny_bundle,
        *("--max-pending-requests", "4", "--max-concurrent-requests", "1000", "--admission-target-ms", "0"),
    )

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = relevance_pb2_grpc.RelevanceServiceStub(channel)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.ScoreRelevance(SLOW, timeout=60)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as e:
                    return e.code()

            return await asyncio.gather(*(one() for _ in range(300)))

    try:
        codes = asyncio.run(burst())
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}, set(codes)
        with server.channel() as channel:
            reply = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query="oak"), timeout=5
            )
            assert reply.categories
    finally:
        stop_server(server)


def test_admission_refuses_heavy_calls_with_a_pushback_and_keeps_answering_cheap_ones(
    tiny_bundle: Path,
) -> None:
    """A burst of heavy calls: admission refuses what is over its delay target with RESOURCE_EXHAUSTED,
    a grpc-retry-pushback-ms hint and a message saying what to do, while ClassifyIntent is still admitted."""
    server = start_server(tiny_bundle)

    async def burst() -> tuple[list[grpc.aio.AioRpcError | None], list[grpc.StatusCode]]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            relevance = relevance_pb2_grpc.RelevanceServiceStub(channel)
            intent = intent_pb2_grpc.IntentServiceStub(channel)

            async def heavy() -> grpc.aio.AioRpcError | None:
                try:
                    await relevance.ScoreRelevance(SLOW, timeout=60)
                except grpc.aio.AioRpcError as e:
                    return e
                return None

            async def cheap() -> grpc.StatusCode:
                await asyncio.sleep(0.05)  # while the heavy calls are queued
                try:
                    await intent.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query="oak"), timeout=60)
                except grpc.aio.AioRpcError as e:
                    return e.code()
                return grpc.StatusCode.OK

            heavy_out = asyncio.gather(*(heavy() for _ in range(40)))
            cheap_out = asyncio.gather(*(cheap() for _ in range(5)))
            return await heavy_out, await cheap_out

    try:
        heavy, cheap = asyncio.run(burst())
        refused = [e for e in heavy if e is not None]
        assert refused and len(refused) < len(heavy)  # some admitted, the rest refused
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            pushback = dict(error.trailing_metadata())["grpc-retry-pushback-ms"]
            assert int(pushback) > 0
            assert "retry after" in error.details() and "ScoreRelevance" in error.details()
        assert cheap == [grpc.StatusCode.OK] * 5
        assert f'sift_admission_refused_total{{method="ScoreRelevance"}} {len(refused)}.0' in server.metrics()
    finally:
        stop_server(server)


def test_a_refused_heavy_call_is_refused_before_its_request_arrives(tiny_bundle: Path) -> None:
    """While the heavy worker's lane is full, a ScoreRelevance is refused without waiting for its request:
    a call whose client never sends the request message gets RESOURCE_EXHAUSTED, where a refusal that
    first received the request would wait for it until the call's deadline. (Under a retry storm every
    refusal then skips receiving 45 KB: sift-bench overload's flood.)"""
    server = start_server(tiny_bundle, "--heavy-workers", "1", "--admission-target-ms", "1")
    path = "/sift.v1.RelevanceService/ScoreRelevance"

    async def run() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = relevance_pb2_grpc.RelevanceServiceStub(channel)
            silent = channel.stream_unary(path)
            done = asyncio.Event()

            async def keep_the_lane_busy() -> None:
                while not done.is_set():
                    with contextlib.suppress(grpc.aio.AioRpcError):  # refused: try again at once
                        await stub.ScoreRelevance(SLOW, timeout=60)

            async def no_request() -> AsyncIterator[bytes]:
                await done.wait()  # the request stream stays open, with nothing sent, until the test ends
                yield b""

            busy = [asyncio.ensure_future(keep_the_lane_busy()) for _ in range(2)]
            codes: list[grpc.StatusCode] = []
            try:
                # A silent call that arrives while the lane is free is admitted and waits for its request:
                # its deadline ends it, and the next one finds the lane full.
                for _ in range(5):
                    try:
                        await silent(no_request(), timeout=3)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as e:
                        codes.append(e.code())
                    if codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        break
            finally:
                done.set()
                await asyncio.gather(*busy)
            return codes

    try:
        codes = asyncio.run(run())
    finally:
        stop_server(server)
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, codes


class _GoneContext:
    """A servicer context whose client left before its status could be sent: gRPC fails the send."""

    async def abort(self, *args: object, **kwargs: object) -> None:
        raise grpc.aio.InternalError('Failed "execute_batch"')


def test_a_refusal_whose_client_has_left_is_dropped_without_an_error() -> None:
    """A refused call that the client gave up on while it waited in gRPC core (its deadline passed) has no
    one to send the refusal to: the refusal ends quietly instead of raising into gRPC, which would log an
    error for every such call under overload."""
    admission = Admission(AdmissionPolicy(0.001, heavy_workers=1))
    admission.calibrate([(Work.of("ScoreRelevance", title=1000), 0.05)])
    admission.admit(Work.of("ScoreRelevance", title=1000))  # the heavy lane is full
    calls = HeavyCalls(admission, frozenset({"ScoreRelevance"}))
    path = "/sift.v1.RelevanceService/ScoreRelevance"
    calls.routes[path] = grpc.unary_unary_rpc_method_handler(lambda request, context: None)

    async def no_continuation(details: grpc.HandlerCallDetails) -> None:
        raise AssertionError("the route is known")

    async def run() -> None:
        details = SimpleNamespace(method=path, invocation_metadata=())
        handler = await calls.intercept_service(no_continuation, details)
        assert handler.request_streaming  # the request is never read
        await handler.stream_unary(None, _GoneContext())

    asyncio.run(run())  # no exception


def test_expired_deadlines_are_refused_and_the_server_keeps_serving(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle)
    try:
        with server.channel() as channel:
            stub = relevance_pb2_grpc.RelevanceServiceStub(channel)
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as late:
                    stub.ScoreRelevance(SLOW, timeout=0.001)
                assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert stub.ScoreRelevance(SLOW, timeout=30).scores
    finally:
        stop_server(server)


class _ExpiredContext:
    """A servicer context whose client deadline has already passed."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float:
        return -0.5

    def invocation_metadata(self) -> tuple:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple = ()) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


def test_work_past_its_deadline_is_never_started_and_is_counted() -> None:
    from prometheus_client import REGISTRY

    from server.transport.middleware import rpc

    started = []

    class Servicer:
        timing_metadata = False

        @rpc("DeadlineProbe")
        async def Probe(self, request: object, context: object) -> object:
            started.append(request)
            return request

    def count() -> float:
        labels = {"method": "DeadlineProbe", "code": "DEADLINE_EXCEEDED"}
        return REGISTRY.get_sample_value("sift_request_duration_seconds_count", labels) or 0.0

    before, context = count(), _ExpiredContext()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(Servicer().Probe("request", context))
    assert started == [] and context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert count() == before + 1
