"""Heavy calls in their own processes: a ScoreRelevance of many candidates is featurized and scored by a
small pool of worker processes, so the serving process's event loop (and its GIL) stays free for the cheap
calls beside it.

Why a process: featurizing 1,000 titles is Python that holds the GIL for tens of milliseconds. Slicing it
on the event loop, or running it on a thread, still makes every cheap call beside it wait for that GIL
(benchmarks/results/overload-hol-*). A process has its own interpreter; the kernel shares the cores.

- **Each worker** loads the same bundle directory read-only (its index and tables are memory-mapped, so the
  pages are shared) and answers with the same RelevanceService code as the serving process, models inline
  and featurization in one go (nothing else runs in it).
- **Priority.** Cheap calls come first: while the serving process has admitted cheap calls (ClassifyIntent,
  Search, EmbedQuery) in the last second, a worker scores under Linux's SCHED_IDLE policy, so it gets only
  the CPU time nothing else wants and gives a core back the moment the event loop (or the clients beside
  it) wakes; with no cheap calls about (a flood of heavy calls, a retry storm of refusals) it scores at
  normal priority and takes its share (`--heavy-worker-priority`; benchmarks/results/overload-admission).
  A thread's policy can be lowered but not raised back without privileges, so each worker keeps two
  threads, its main one and one under SCHED_IDLE, and hands each call to one of them.
- **One call at a time per worker.** The serving process queues heavy calls and hands each to an idle
  worker; admission (server/admission.py) bounds that queue by its estimated delay.
- **Bundles.** Every call names the bundle version it started on. On a reload the serving process has each
  worker load and warm the new bundle before swapping it in (a worker that cannot refuses the reload); a
  worker keeps the previous bundle too, so calls in flight finish on the bundle they started with.
- **Errors** a caller can cause (a bad field, an unknown product) come back as the same server/errors.py
  kind naming the field; anything else is INTERNAL. A worker that dies fails the call it held, and a new
  one is started in its place.
- **Lifetime.** Workers ignore SIGINT, SIGTERM and SIGHUP (the serving process drains and then closes
  them) and exit when their pipe closes, so they never outlive the serving process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from server import admission, errors, metrics, timing
from server.config import HeavyWorkerPriority

log = logging.getLogger("sift.heavy")

# Bundles a worker keeps: the one serving and the one before it (calls in flight on it finish there).
KEPT_BUNDLES = 2


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    nice: int = 0
    """Added to the worker's scheduling niceness: positive gives the serving process the cores first."""
    priority: HeavyWorkerPriority = "adaptive"
    """Which calls a worker scores under SCHED_IDLE: "adaptive" those the serving process marks (cheap calls
    admitted in the last second), "idle" all, "normal" none."""


def enter_idle_policy() -> Exception | None:
    """Put the calling thread (pid 0: this thread alone) under Linux's SCHED_IDLE; the error where the
    platform has no such policy or refuses it, else None. benchmarks/cpu_burner.py's control uses it too."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as e:  # not Linux, or refused
        return e
    return None


class IdleThread:
    """A thread under Linux's SCHED_IDLE policy that runs one function at a time for its caller, who waits
    (asleep, so the thread has the caller's share of the CPU as well as nothing else's)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple]] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True, name="sift-heavy-idle").start()

    def _serve(self) -> None:
        if (refused := enter_idle_policy()) is not None:  # calls still run, at normal priority
            log.warning("heavy worker: cannot run under SCHED_IDLE (%s); scoring at normal priority", refused)
        while True:
            function, args = self._jobs.get()
            try:
                self._results.put((True, function(*args)))
            except BaseException as e:  # handed back to the caller, which raises it
                self._results.put((False, e))

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        self._jobs.put((function, args))
        ok, value = self._results.get()
        if not ok:
            raise value
        return value


# ---------------------------------------------------------------------------------------------- worker side


def _worker_main(conn: Connection, options: WorkerOptions) -> None:
    """A worker process: load bundles and score calls until the pipe closes."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if options.nice:
        os.nice(options.nice)
    import onnxruntime  # noqa: F401  (before usearch, which the bundle's index imports: the reverse crashes)

    from server.bundle import load_bundle
    from server.runtime.onnx import ThreadSettings
    from server.service.heavy import HeavyWork
    from server.service.relevance import CandidateInput, RelevanceService
    from server.service.store import BundleStore
    from server.service.validation import Limits
    from server.transport.servicers import RelevanceServicer, relevance_pb2

    ScoreRelevanceRequest = relevance_pb2.ScoreRelevanceRequest

    threads = ThreadSettings(options.intra_op_threads, options.inter_op_threads)
    services: collections.OrderedDict[str, tuple[Any, Any]] = collections.OrderedDict()
    loop = asyncio.new_event_loop()

    def load(path: str) -> str:
        # The serving process hashes the same directory's files as it loads them (a second pass over a
        # gigabyte index here would double the hashing, on the same cores, at every start and reload).
        bundle = load_bundle(Path(path), threads, None, verify=False)
        bundle.warm_up()
        services[bundle.version] = (bundle, BundleStore(bundle))
        services.move_to_end(bundle.version)
        while len(services) > KEPT_BUNDLES:
            services.popitem(last=False)
        return bundle.version

    def answer(message: tuple) -> tuple:
        """The reply to one "call" or "score" message (whose last item is the serving process's mark for
        SCHED_IDLE)."""
        try:
            version, path, limits = message[1:4]
            if version not in services:  # a call on a bundle this worker was not asked to load
                load(path)
            store = services.get(version) or next(reversed(services.values()))
            service = RelevanceService(store[1], Limits(**limits), HeavyWork(0, 0))
            breakdown = timing.open_breakdown()
            if message[0] == "call":  # the request's bytes in, the response's bytes out: the gRPC path
                request_bytes, deadline = message[4:6]
                servicer = RelevanceServicer(service, timing_metadata=False)
                request = ScoreRelevanceRequest.FromString(request_bytes)
                handler = RelevanceServicer.ScoreRelevance.__wrapped__  # without the serving middleware
                response = loop.run_until_complete(handler(servicer, request, _Deadline(deadline)))
                return ("ok", response.SerializeToString(), breakdown)
            query, ids, titles, deadline = message[4:8]
            candidates = [CandidateInput(product_id=i, title=t) for i, t in zip(ids, titles, strict=True)]
            result = loop.run_until_complete(service.score(query, candidates, deadline))
            return ("ok", _columns(result), breakdown)
        except errors.SiftError as e:
            kinds = [c.__name__ for c in type(e).__mro__]
            return ("error", kinds, getattr(e, "field", None), getattr(e, "problem", str(e)))
        except Exception as e:
            log.exception("heavy worker: unexpected error")
            return ("internal", f"{type(e).__name__}: {e}")

    idle = IdleThread() if options.priority != "normal" else None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "load":
            try:
                conn.send(("loaded", load(message[1])))
            except Exception as e:  # reported to the serving process, which refuses the reload
                conn.send(("failed", f"{type(e).__name__}: {e}"))
            continue
        background = options.priority == "idle" or (options.priority == "adaptive" and message[-1])
        conn.send(idle.run(answer, message) if idle is not None and background else answer(message))


class _Deadline:
    """What the relevance handler reads of its gRPC context in a worker: the time left."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()


def _columns(result: Any) -> dict[str, Any]:
    """A RelevanceResult as columns: a list of a thousand small objects pickles ten times slower."""
    scores = result.scores
    names = [f.name for f in dataclasses.fields(scores[0])] if scores else []
    return {
        "scores": {name: [getattr(s, name) for s in scores] for name in names},
        **{f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "scores"},
    }


def _from_columns(columns: dict[str, Any]) -> Any:
    from server.service.relevance import RelevanceResult, ScoredCandidate

    cols = columns["scores"]
    rows = zip(*cols.values(), strict=True) if cols else ()
    names = list(cols)
    scores = [ScoredCandidate(**dict(zip(names, row, strict=True))) for row in rows]
    return RelevanceResult(scores=scores, **{k: v for k, v in columns.items() if k != "scores"})


def _error(kinds: list[str], field: str | None, problem: str) -> errors.SiftError:
    """The worker's error as the nearest kind of server/errors.py (a runtime refusal defined elsewhere
    becomes the kind it subclasses), so the caller gets the same status and message."""
    cls: type[errors.SiftError] = next(
        c
        for c in (getattr(errors, k, None) for k in kinds)
        if isinstance(c, type) and issubclass(c, errors.SiftError)
    )
    if field is not None and cls in (errors.InvalidArgument, errors.NotFound):
        return cls(field, problem)
    return cls(problem)


# ---------------------------------------------------------------------------------------------- pool side


class HeavyWorkerError(RuntimeError):
    """A worker failed in a way no caller caused (it died, or hit an unexpected error): INTERNAL."""


class WorkerDied(HeavyWorkerError):
    """The worker's pipe broke before it answered (killed, out of memory)."""


class _Worker:
    """One worker process and this side of its pipe. The pipe is a socket pair: the worker reads and writes
    it with multiprocessing's Connection (blocking, it has nothing else to do); this side speaks the same
    framing (a 4-byte big-endian length, then a pickle) through asyncio streams, since a descriptor the
    event loop watches is non-blocking, where Connection.recv fails on a message only partly arrived."""

    def __init__(self, ctx: Any, options: WorkerOptions) -> None:
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, options), daemon=True, name="sift-heavy")
        self.process.start()
        child.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(parent.fileno()))
        parent.close()
        self.reply: asyncio.Future[Any] | None = None
        self.dead = False  # its pipe broke or closed: gone, whatever waitpid says
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self.opened = asyncio.ensure_future(self._open(sock))

    async def _open(self, sock: socket.socket) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=sock)
        self._reading = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = struct.unpack("!i", await reader.readexactly(4))
                if size == -1:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                self._deliver(pickle.loads(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, OSError, pickle.UnpicklingError) as e:
            self.dead = True
            self._deliver(("died", f"heavy worker {self.process.pid} exited ({type(e).__name__})"))

    def _deliver(self, message: tuple) -> None:
        reply, self.reply = self.reply, None
        if reply is not None and not reply.done():
            reply.set_result(message)

    def send(self, message: tuple) -> asyncio.Future[Any]:
        """Sends one message; the future holds the worker's reply (the event loop never waits on it)."""
        reply = self.reply = asyncio.get_running_loop().create_future()
        writer = self._writer
        if self.dead or writer is None or writer.is_closing():
            self.dead = True
            self._deliver(("died", f"heavy worker {self.process.pid} cannot take calls"))
            return reply
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        size = struct.pack("!i", len(data)) if len(data) <= 0x7FFFFFFF else struct.pack("!iQ", -1, len(data))
        writer.write(size + data)
        return reply

    @property
    def alive(self) -> bool:
        if self.dead or not self.process.is_alive():
            return False
        # is_alive() cannot tell a process something else already reaped (waitpid fails, so it says alive).
        try:
            os.kill(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def close(self, timeout: float) -> None:
        """Asks the worker to stop (after the call it holds), killing it after `timeout`."""
        with contextlib.suppress(Exception):
            await self.opened
        writer = self._writer
        if writer is not None and not writer.is_closing():
            with contextlib.suppress(Exception):
                self.send(("stop",))
                writer.close()
        await asyncio.to_thread(self.process.join, timeout)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 1.0)
        if self._reading is not None:
            self._reading.cancel()


class HeavyPool:
    """`size` worker processes for heavy calls; `score` hands a call to the next idle one."""

    def __init__(self, size: int, options: WorkerOptions | None = None) -> None:
        self.size = size
        self.options = options or WorkerOptions()
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] | None = None
        self._closing: set[asyncio.Future[None]] = set()  # closes of dead workers under way
        self._ready = False
        self.background: Callable[[], bool] = lambda: False
        """Asked as each call is handed over: whether cheap calls are about, so that an "adaptive" worker
        scores it under SCHED_IDLE (the server sets it from its admission)."""

    @property
    def started(self) -> bool:
        return bool(self._workers)

    @property
    def ready(self) -> bool:
        """The workers hold the serving bundle: heavy calls go to them only then (the serving process
        answers them itself while the workers load at start-up)."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        metrics.HEAVY_WORKERS_READY.set(int(value))

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def start(self) -> None:
        self._workers = [_Worker(self._ctx, self.options) for _ in range(self.size)]
        self._idle = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def load(self, path: Path) -> str:
        """Every worker loads and warms the bundle at `path` (after the calls they hold); returns its
        version. Raises RuntimeError when a worker cannot (the serving process then refuses the bundle)."""
        if not self.started:
            self.start()
        assert self._idle is not None
        taken = [await self._idle.get() for _ in self._workers]
        try:
            await asyncio.gather(*(w.opened for w in taken))
            replies = await asyncio.gather(*(w.send(("load", str(path))) for w in taken))
        finally:
            for worker in taken:
                self._release(worker)
        for kind, detail in replies:
            if kind != "loaded":
                raise RuntimeError(f"heavy worker could not load {path}: {detail}")
        versions = {detail for _, detail in replies}
        if len(versions) != 1:
            raise RuntimeError(f"heavy workers loaded different bundles from {path}: {sorted(versions)}")
        return versions.pop()

    async def score(
        self,
        version: str,
        path: Path,
        limits: dict[str, int],
        query: str,
        ids: list[str],
        titles: list[str],
        deadline: float | None,
    ) -> Any:
        """One ScoreRelevance on a worker: the RelevanceResult, or the SiftError the call caused."""
        message = ("score", version, str(path), limits, query, ids, titles, deadline)
        return _from_columns(await self._run(message, deadline))

    async def call(
        self, version: str, path: Path, limits: dict[str, int], request: bytes, deadline: float | None
    ) -> bytes:
        """One ScoreRelevance on a worker from its request's bytes: the response's bytes, or the SiftError
        the call caused. The call is scored and its response built in the worker; this process only passes
        the bytes on."""
        return await self._run(("call", version, str(path), limits, request, deadline), deadline)

    async def _run(self, message: tuple, deadline: float | None) -> Any:
        try:
            return await self._run_once(message, deadline)
        except WorkerDied:
            # A worker can die between calls without its pipe saying so yet: the call goes once more, to the
            # replacement _release started. Only once, so a call that kills workers cannot kill them all.
            return await self._run_once(message, deadline)

    async def _run_once(self, message: tuple, deadline: float | None) -> Any:
        assert self._idle is not None, "the heavy pool is not started"
        worker = await self._idle.get()
        if not worker.alive:  # died while idle: its call goes to the replacement
            try:
                worker = self._replace(worker)
            except Exception:
                self._idle.put_nowait(worker)
                raise
        held = True
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.DeadlineExceeded("the deadline passed while the call waited for a heavy worker")
            await worker.opened
            sent = time.perf_counter()
            pending = worker.send((*message, self.background()))
            try:
                reply = await asyncio.shield(pending)
                admission.served(time.perf_counter() - sent)
            except asyncio.CancelledError:
                # The caller went away: the worker finishes the call, its answer is dropped, then it is free.
                pending.add_done_callback(lambda _: self._release(worker))
                held = False
                raise
        finally:
            if held:
                self._release(worker)
        kind = reply[0]
        if kind == "ok":
            for part, seconds in reply[2].items():
                timing.add(part, seconds)
            return reply[1]
        if kind == "error":
            raise _error(*reply[1:])
        raise (WorkerDied if kind == "died" else HeavyWorkerError)(reply[1])

    def _release(self, worker: _Worker) -> None:
        if self._idle is None:  # closed meanwhile
            return
        if worker.alive:
            self._idle.put_nowait(worker)
            return
        try:
            worker = self._replace(worker)
        except Exception:  # never lose a worker's place: the dead one is put back, and replaced next time
            log.exception("heavy worker: cannot start a replacement")
        self._idle.put_nowait(worker)

    def _replace(self, worker: _Worker) -> _Worker:
        """A new worker in place of one that died; it loads a call's bundle on its first call."""
        log.error(
            "heavy worker %s exited (code %s); starting another", worker.process.pid, worker.process.exitcode
        )
        closing = asyncio.ensure_future(worker.close(0.1))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        fresh = _Worker(self._ctx, self.options)
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    async def close(self, timeout: float = 5.0) -> None:
        """Stops every worker (after the call it holds), killing one still running after `timeout`."""
        workers, self._workers, self._idle = self._workers, [], None
        self.ready = False
        await asyncio.gather(*(worker.close(timeout) for worker in workers), *self._closing)


def to_workers(candidates: Any, rows: int) -> bool:
    """Whether a ScoreRelevance goes to the heavy workers (server/admission.py's reaches_workers). As
    admission does, the first candidate says whether a call gives titles or ids."""
    n = len(candidates)
    return admission.reaches_workers(bool(n) and bool(candidates[0].product_id), n, rows)


class PooledRelevance:
    """RelevanceService's `score`, with calls of at least `rows` titles' worth of work (`to_workers`) scored
    by the heavy pool and smaller ones (which cost less than the hand-over) by the local service."""

    def __init__(self, local: Any, pool: HeavyPool, store: Any, limits: Any, rows: int) -> None:
        self._local = local
        self._pool = pool
        self._store = store
        self._limits = dataclasses.asdict(limits)
        self.rows = rows

    async def score(self, query: str, candidates: list, deadline: float | None = None) -> Any:
        if not to_workers(candidates, self.rows) or not self._pool.ready:
            return await self._local.score(query, candidates, deadline)
        bundle = self._store.bundle
        ids = [c.product_id for c in candidates]
        titles = [c.title for c in candidates]
        return await self._pool.score(
            bundle.version, bundle.directory, self._limits, query, ids, titles, deadline
        )


class PooledScoreRelevance:
    """The gRPC ScoreRelevance handler when heavy workers run: a call of `rows` titles' worth goes to
    a worker as its request's bytes and comes back as the response's bytes, through the same middleware as
    every call (admission, deadlines, metrics, errors naming the field); smaller ones, and undecodable
    ones, go to the servicer's own method. Returns bytes or a response message: `serialize` takes both."""

    admission: Any = None  # set by the server, as on the servicers

    def __init__(self, local: Any, pool: HeavyPool, store: Any, limits: Any, rows: int) -> None:
        from server.transport.middleware import deadline_of, rpc
        from server.transport.register import Undecodable
        from server.transport.servicers import relevance_work

        self._local = local  # the servicer's bound ScoreRelevance, middleware included
        self._pool = pool
        self._store = store
        self._limits = dataclasses.asdict(limits)
        self._rows = rows
        self._undecodable = Undecodable
        self.timing_metadata = getattr(local.__self__, "timing_metadata", False)

        @rpc("ScoreRelevance", relevance_work)  # admitted as the servicer's own method admits it
        async def pooled(_self: Any, request: Any, context: Any) -> bytes:
            bundle = self._store.bundle
            bundle.require("relevance")
            data = request.SerializeToString()
            return await self._pool.call(
                bundle.version, bundle.directory, self._limits, data, deadline_of(context)
            )

        self._pooled = pooled

    async def handle(self, request: Any, context: Any) -> Any:
        if (
            isinstance(request, self._undecodable)
            or not to_workers(request.candidates, self._rows)
            or not self._pool.ready
        ):
            return await self._local(request, context)
        return await self._pooled(self, request, context)

    @staticmethod
    def serialize(response: Any) -> bytes:
        return response if isinstance(response, bytes) else response.SerializeToString()


def tolerant_parse(cls: Any) -> Any:
    """A request deserializer that never raises: bytes that are not a `cls` become Undecodable, which the
    middleware answers with INVALID_ARGUMENT (as server/transport/register.py's do)."""
    from server.transport.register import Undecodable

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as e:  # DecodeError, or a UTF-8 error from a string field
            return Undecodable(cls.DESCRIPTOR.full_name, str(e) or type(e).__name__)

    return parse
