"""Heavy calls in worker processes (server/heavy_worker.py): the same answers as the serving process gives,
errors that name the field, a worker that follows a reload, a worker that dies replaced, and none left
behind when the server stops."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from benchmarks.servers import children
from server import errors
from server._proto.sift.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
)
from server.admission import ID_COST, Admission, AdmissionPolicy, Work
from server.heavy_worker import HeavyPool, IdleThread, _columns, _error, _from_columns, to_workers
from server.service.relevance import RelevanceResult, ScoredCandidate
from server.service.validation import Limits
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tests.server.test_bundle import edit_manifest

TITLES = [f"oak coffee table model {i}" for i in range(80)] + [f"nonstick frying pan {i}" for i in range(40)]
LARGE = relevance_pb2.ScoreRelevanceRequest(
    query="oak coffee table", candidates=[relevance_pb2.Candidate(title=t) for t in TITLES]
)


def _score(
    server: LiveServer, request: relevance_pb2.ScoreRelevanceRequest
) -> relevance_pb2.ScoreRelevanceResponse:
    with server.channel() as channel:
        return relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(request, timeout=30)


def _heavy_workers(server: LiveServer) -> set[int]:
    """The serving process's heavy workers (multiprocessing also starts a resource tracker beside them)."""
    return {
        pid
        for pid in children(server.process.pid)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }


def test_columns_round_trip_a_result() -> None:
    result = RelevanceResult(
        [ScoredCandidate(0.9, "exact", "model"), ScoredCandidate(0.1, "irrelevant", "rule", "color_clash")],
        "v7",
    )
    assert _from_columns(_columns(result)) == result
    assert _from_columns(_columns(RelevanceResult([], "v7"))) == RelevanceResult([], "v7")


def test_worker_errors_come_back_as_the_same_kind() -> None:
    e = _error(["InvalidArgument", "SiftError", "Exception"], "candidates[3].title", "must not be empty")
    assert isinstance(e, errors.InvalidArgument) and str(e) == "candidates[3].title: must not be empty"
    # A runtime refusal defined elsewhere becomes the kind it subclasses.
    e = _error(["QueueFull", "ResourceExhausted", "SiftError", "Exception"], None, "queue full")
    assert type(e) is errors.ResourceExhausted and str(e) == "queue full"


def test_pooled_answers_equal_the_serving_process_answers(tiny_bundle: Path) -> None:
    pooled = start_server(tiny_bundle, "--heavy-workers", "1")
    try:
        assert len(_heavy_workers(pooled)) == 1
        from_pool = _score(pooled, LARGE)
    finally:
        stop_server(pooled)
    local = start_server(tiny_bundle, "--heavy-workers", "0")
    try:
        assert not _heavy_workers(local)
        here = _score(local, LARGE)
    finally:
        stop_server(local)
    assert len(from_pool.scores) == len(TITLES)
    assert from_pool == here


def test_the_time_a_worker_held_a_call_reaches_the_calls_admission_ticket(tiny_bundle: Path) -> None:
    async def main() -> tuple[float | None, float]:
        pool = HeavyPool(1)
        try:
            version = await pool.load(tiny_bundle)
            admission = Admission(AdmissionPolicy(0.1, heavy_workers=1))
            ticket = admission.admit(Work.of("ScoreRelevance", title=len(TITLES)))
            start = time.perf_counter()
            limits = dataclasses.asdict(Limits())
            ids = [""] * len(TITLES)
            result = await pool.score(version, tiny_bundle, limits, "oak table", ids, TITLES, None)
            assert len(result.scores) == len(TITLES)
            return ticket.served, time.perf_counter() - start
        finally:
            await pool.close()

    served, took = asyncio.run(main())
    assert served is not None and 0 < served <= took


def test_bad_input_in_a_worker_names_the_field_and_the_server_keeps_serving(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, "--heavy-workers", "1")
    try:
        cases = [
            (relevance_pb2.Candidate(), grpc.StatusCode.INVALID_ARGUMENT, "candidates[120]"),
            (
                relevance_pb2.Candidate(product_id="NO-SUCH-ID"),
                grpc.StatusCode.NOT_FOUND,
                "candidates[120].product_id",
            ),
            (
                relevance_pb2.Candidate(title="x" * 600),
                grpc.StatusCode.INVALID_ARGUMENT,
                "candidates[120].title",
            ),
        ]
        for candidate, code, field in cases:
            request = relevance_pb2.ScoreRelevanceRequest(
                query="oak", candidates=[*LARGE.candidates, candidate]
            )
            with pytest.raises(grpc.RpcError) as refused:
                _score(server, request)
            assert refused.value.code() == code
            assert field in refused.value.details()
        assert len(_score(server, LARGE).scores) == len(TITLES)
    finally:
        stop_server(server)


def test_the_worker_follows_a_reload(tiny_bundle: Path, bundle_copy: Path, tmp_path: Path) -> None:
    server = start_server(bundle_copy, "--heavy-workers", "1")
    try:
        before = _score(server, LARGE).model_version
        edit_manifest(bundle_copy, lambda m: m.update(bundle_version="reloaded-in-workers"))
        with server.channel() as channel:
            admin_pb2_grpc.AdminServiceStub(channel).ReloadBundle(
                admin_pb2.ReloadBundleRequest(path=str(bundle_copy)), timeout=60
            )
        after = _score(server, LARGE)
        assert before != "reloaded-in-workers"
        assert after.model_version == "reloaded-in-workers"
        assert len(after.scores) == len(TITLES)
    finally:
        stop_server(server)


def test_a_worker_that_dies_is_replaced(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, "--heavy-workers", "1")
    try:
        (first,) = _heavy_workers(server)
        os.kill(first, signal.SIGKILL)
        status = Path(f"/proc/{first}/status")
        deadline = time.monotonic() + 10
        while status.exists() and "zombie" not in status.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the kernel has ended it (the pool finds it dead on its next call)
        assert len(_score(server, LARGE).scores) == len(TITLES)
        assert _heavy_workers(server) and first not in _heavy_workers(server)
    finally:
        stop_server(server)


def _policies(pid: int) -> set[int]:
    """The scheduling policies of a process's threads."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_the_idle_thread_runs_under_sched_idle_and_hands_back_results_and_errors() -> None:
    idle = IdleThread()
    assert idle.run(os.sched_getscheduler, 0) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's own policy is untouched
    assert idle.run(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        idle.run(divmod, 1, 0)


@pytest.mark.parametrize("priority", ["adaptive", "idle", "normal"])
def test_each_priority_answers_as_the_serving_process(tiny_bundle: Path, priority: str) -> None:
    """A cheap call first, so that "adaptive" hands the heavy one to the worker's SCHED_IDLE thread."""
    server = start_server(tiny_bundle, "--heavy-workers", "1", "--heavy-worker-priority", priority)
    try:
        (worker,) = _heavy_workers(server)
        with server.channel() as channel:
            intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query="oak coffee table"), timeout=30
            )
        pooled = _score(server, LARGE)
        # The worker's idle thread starts with it (none when it never uses one); the serving process's
        # threads keep their policy.
        deadline = time.monotonic() + 30
        while (os.SCHED_IDLE in _policies(worker)) != (priority != "normal") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (os.SCHED_IDLE in _policies(worker)) == (priority != "normal")
        assert os.SCHED_IDLE not in _policies(server.process.pid)
    finally:
        stop_server(server)
    local = start_server(tiny_bundle, "--heavy-workers", "0")
    try:
        assert pooled == _score(local, LARGE)
    finally:
        stop_server(local)


def test_workers_stop_with_the_server(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, "--heavy-workers", "2")
    workers = _heavy_workers(server)
    assert len(workers) == 2
    assert stop_server(server) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_an_undecodable_request_on_the_workers_route_is_invalid_argument(tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, "--heavy-workers", "1")
    try:
        with server.channel() as channel:
            raw = channel.unary_unary("/sift.v1.RelevanceService/ScoreRelevance")
            with pytest.raises(grpc.RpcError) as refused:
                raw(b"\xff\xff\xff\xff", timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sift.v1.ScoreRelevanceRequest" in refused.value.details()
        assert len(_score(server, LARGE).scores) == len(TITLES)
    finally:
        stop_server(server)


def test_heavy_calls_are_refused_before_their_request_is_read(tiny_bundle: Path) -> None:
    """While a 1,000-title call fills the heavy lane, further ScoreRelevance calls are refused before their
    bytes are parsed: bytes that are no request at all get RESOURCE_EXHAUSTED with a pushback, not
    INVALID_ARGUMENT."""
    server = start_server(tiny_bundle, "--heavy-workers", "1", "--admission-target-ms", "1")
    slow = relevance_pb2.ScoreRelevanceRequest(
        query="oak coffee table",
        candidates=[relevance_pb2.Candidate(title=f"oak table model {i}") for i in range(1000)],
    )

    async def run() -> list[tuple[grpc.StatusCode, str | None]]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = relevance_pb2_grpc.RelevanceServiceStub(channel)
            raw = channel.unary_unary("/sift.v1.RelevanceService/ScoreRelevance")
            heavy = asyncio.ensure_future(stub.ScoreRelevance(slow, timeout=60))
            seen: list[tuple[grpc.StatusCode, str | None]] = []
            while not heavy.done():
                try:
                    await raw(b"\xff\xff\xff\xff", timeout=10)
                except grpc.aio.AioRpcError as e:
                    pushback = dict(e.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                    seen.append((e.code(), pushback))
            assert len((await heavy).scores) == 1000
            return seen

    try:
        seen = asyncio.run(run())
    finally:
        stop_server(server)
    codes = {code for code, _ in seen}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, seen[:5]
    assert codes <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT}
    assert all(int(p) > 0 for code, p in seen if code == grpc.StatusCode.RESOURCE_EXHAUSTED and p)
    assert all(p for code, p in seen if code == grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_serving_comes_before_the_workers_load_and_heavy_calls_are_answered_meanwhile(
    tiny_bundle: Path,
) -> None:
    """At start-up the server reports SERVING once it has loaded the bundle itself, answers heavy calls
    itself while its workers load (their load does not add to the cold start), then hands them over:
    sift_heavy_workers_ready turns 1 and the log says so."""
    metrics_port = free_port()
    server = start_server(tiny_bundle, "--heavy-workers", "1", "--metrics-port", str(metrics_port))
    server.metrics_port = metrics_port
    try:
        assert len(_score(server, LARGE).scores) == len(TITLES)  # whoever answers, it is answered
        deadline = time.monotonic() + 60
        while "sift_heavy_workers_ready 1.0" not in server.metrics() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "sift_heavy_workers_ready 1.0" in server.metrics()
        assert "heavy workers loaded bundle" in server.log()
        assert len(_score(server, LARGE).scores) == len(TITLES)
    finally:
        stop_server(server)


def test_calls_go_to_the_workers_by_their_cost() -> None:
    """Titles are featurized and embedded, ids only looked up: a call by ids goes to the workers only at
    ID_COST times as many candidates (below, the hand-over costs more than the call)."""
    titles = [relevance_pb2.Candidate(title="oak table")] * 64
    ids = [relevance_pb2.Candidate(product_id="P1")] * 64
    assert to_workers(titles, 64) and not to_workers(titles[:63], 64)
    assert not to_workers(ids, 64) and not to_workers(ids * 2, 64)
    assert to_workers(ids * ID_COST, 64)
    assert not to_workers([], 64) and to_workers([], 0)
