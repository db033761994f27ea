"""Assembles the grpc.aio server: servicers, per-service health, reflection, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from server import metrics, tracing
from server._proto.sift.v1 import (
    admin_pb2,
    info_pb2,
    intent_pb2,
    relevance_pb2,
    retrieval_pb2,
)
from server.admission import PUSHBACK_KEY, Admission, AdmissionPolicy, Overloaded
from server.api_keys import ApiKeys
from server.bundle import MANIFEST, Bundle, BundleError, load_bundle
from server.config import Settings
from server.heavy_worker import (
    HeavyPool,
    PooledRelevance,
    PooledScoreRelevance,
    WorkerOptions,
    tolerant_parse,
)
from server.logs import FIELDS
from server.runtime.batcher import BatchPolicy
from server.runtime.onnx import ThreadSettings
from server.service import calibration
from server.service.admin import AdminService
from server.service.heavy import HeavyWork
from server.service.info import InfoService
from server.service.intent import IntentService
from server.service.relevance import RelevanceService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits
from server.transport.api_key_interceptor import ApiKeyInterceptor
from server.transport.register import add_servicer
from server.transport.servicers import (
    AdminServicer,
    InfoServicer,
    IntentServicer,
    RelevanceServicer,
    RetrievalServicer,
)

if TYPE_CHECKING:
    from server.transport.http import HttpServer

log = logging.getLogger("sift.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Service:
    """One gRPC service: its proto, the bundle capability it needs, and how to build its servicer."""

    pb2: ModuleType
    name: str  # as the proto names it
    capability: str | None  # None: served whenever a bundle is loaded
    servicer: Callable[[SiftServer], object]

    @property
    def full_name(self) -> str:
        return self.pb2.DESCRIPTOR.services_by_name[self.name].full_name


# Every service, declared once: registration, per-service health and reflection all follow this table.
SERVICES = (
    Service(
        intent_pb2,
        "IntentService",
        "intent",
        lambda s: IntentServicer(
            IntentService(s.store, s.limits, s.settings.cache_size, s.heavy), s.settings.timing_metadata
        ),
    ),
    Service(
        relevance_pb2,
        "RelevanceService",
        "relevance",
        lambda s: RelevanceServicer(s.relevance_service(), s.settings.timing_metadata),
    ),
    Service(
        retrieval_pb2,
        "RetrievalService",
        "retrieval",
        lambda s: RetrievalServicer(
            RetrievalService(s.store, s.limits, s.settings.cache_size, s.heavy), s.settings.timing_metadata
        ),
    ),
    Service(
        info_pb2,
        "InfoService",
        None,
        lambda s: InfoServicer(InfoService(s.store), s.settings.timing_metadata),
    ),
    Service(
        admin_pb2,
        "AdminService",
        None,
        lambda s: AdminServicer(AdminService(s.load), s.settings.admin_token, s.settings.timing_metadata),
    ),
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)
# Health service name -> the bundle capability it needs; "" is the server as a whole.
SERVICE_CAPABILITY: dict[str, str | None] = {"": None, **{s.full_name: s.capability for s in SERVICES}}
# "Cheap calls about", for the heavy workers' adaptive priority: long enough to span the gaps of a search
# stack's steady traffic, short enough that a load of heavy calls alone regains its share within a second.
CHEAP_CALLS_WINDOW_S = 1.0
# AdminService has its own rule (localhost or the admin token), so API keys never guard it.
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


class SiftServer:
    """One serving process: binds first (health NOT_SERVING), loads and warms the bundle, then SERVING."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The bundle served, or to load next: the configured one until ReloadBundle names another.
        self.bundle_path = settings.bundle
        self.store = BundleStore()
        self.limits = Limits(
            max_query_chars=settings.max_query_chars,
            max_candidates=settings.max_candidates,
            max_k=settings.max_k,
            max_batch_items=settings.max_batch_items,
        )
        # Heavy calls (ScoreRelevance of at least --offload-rows candidates) in worker processes, so their
        # Python featurization never holds this process's GIL: server/heavy_worker.py.
        self.heavy_pool = (
            HeavyPool(
                settings.heavy_workers,
                WorkerOptions(
                    settings.intra_op_threads,
                    settings.inter_op_threads,
                    settings.heavy_worker_nice,
                    settings.heavy_worker_priority,
                ),
            )
            if settings.heavy_workers
            else None
        )
        heavy_methods = frozenset(m.strip() for m in settings.admission_heavy_methods.split(",") if m.strip())
        self.admission = Admission(
            AdmissionPolicy(
                settings.admission_target_ms / 1000,
                heavy_methods,
                settings.admission_heavy_share,
                # Only ScoreRelevance runs in the heavy workers; other heavy methods share the loop's lane.
                settings.heavy_workers if heavy_methods <= {"ScoreRelevance"} else 0,
                settings.offload_rows,
            )
        )
        if self.heavy_pool is not None:
            self.heavy_pool.background = lambda: self.admission.cheap_within(CHEAP_CALLS_WINDOW_S)
        self.heavy = HeavyWork(
            settings.slice_rows, settings.offload_rows, settings.offload_min_ms, self.admission.loop_shared
        )
        cap = settings.max_message_bytes
        self.api_keys = api_keys(settings)
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.api_keys is not None:
            interceptors.append(ApiKeyInterceptor(self.api_keys))
        # With heavy workers, ScoreRelevance goes to them as bytes and heavy refusals come before parsing;
        # without, calls take the servicers' path alone (no interceptor, as before heavy workers).
        self.heavy_calls = HeavyCalls(self.admission, heavy_methods)
        if self.heavy_pool is not None:
            interceptors.append(self.heavy_calls)
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cap),
                ("grpc.max_send_message_length", cap),
                # Soft and hard limit equal: a fixed bound instead of core's random early drop between them.
                ("grpc.server.max_pending_requests", settings.max_pending_requests),
                ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_requests),
                # Clients may check idle connections with keepalive pings, at most one per 30 s (more often
                # gets GOAWAY too_many_pings): a search backend keeps its channel open between bursts.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
                *(
                    [
                        ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(settings.grace_period * 1000)),
                    ]
                    if settings.max_connection_age
                    else []
                ),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_requests,
        )
        self.servicers: dict[str, object] = {}  # full service name -> servicer, gRPC's and HTTP's
        for service in SERVICES:
            servicer = service.servicer(self)
            if hasattr(servicer, "admission"):
                servicer.admission = self.admission
            add_servicer(self.server, servicer, service.pb2, service.name)
            self.servicers[service.full_name] = servicer
        if self.heavy_pool is not None:  # gRPC's ScoreRelevance: large calls to the workers, as bytes
            relevance = self.servicers[
                relevance_pb2.DESCRIPTOR.services_by_name["RelevanceService"].full_name
            ]
            pooled = PooledScoreRelevance(
                relevance.ScoreRelevance, self.heavy_pool, self.store, self.limits, settings.offload_rows
            )
            pooled.admission = self.admission
            self.heavy_calls.routes[
                f"/{relevance_pb2.DESCRIPTOR.package}.RelevanceService/ScoreRelevance"
            ] = grpc.unary_unary_rpc_method_handler(
                pooled.handle,
                request_deserializer=tolerant_parse(relevance_pb2.ScoreRelevanceRequest),
                response_serializer=pooled.serialize,
            )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.health_status: dict[str, int] = {}  # what gRPC health says, for HTTP's health routes
        self.http: HttpServer | None = None
        self.port = 0
        self._loading = asyncio.Lock()
        self._heavy_start: asyncio.Future[None] | None = None  # the heavy workers' first load

    def relevance_service(self) -> RelevanceService | PooledRelevance:
        local = RelevanceService(self.store, self.limits, self.heavy)
        if self.heavy_pool is None:
            return local
        return PooledRelevance(local, self.heavy_pool, self.store, self.limits, self.settings.offload_rows)

    async def set_health(self, name: str, status: int) -> None:
        self.health_status[name] = status
        await self.health.set(name, status)

    async def start(self) -> None:
        if self.api_keys is not None:
            log.info("%d API keys from %s", self.api_keys.reload(), self.api_keys.path)
        if self.settings.otlp_endpoint:
            s = self.settings
            tracing.configure(s.otlp_endpoint, s.otlp_service_name, s.otlp_sample_ratio)
        if not self.store.loaded:
            for name in SERVICE_CAPABILITY:
                await self.set_health(name, NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        await self.server.start()
        if self.settings.http_port:
            await self.start_http()
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, addr=self.settings.host)
        log.info(
            "listening on %s:%d (metrics on %d)", self.settings.host, self.port, self.settings.metrics_port
        )

    async def start_http(self) -> None:
        # Starlette and uvicorn load only when HTTP is on (--http-port): about 40 ms of every start else.
        from server.transport.http import HttpServer, HttpService, build_app

        s = self.settings
        app = build_app(
            [
                HttpService(
                    service.pb2.DESCRIPTOR.services_by_name[service.name], self.servicers[service.full_name]
                )
                for service in SERVICES
            ],
            self.health_status.get,
            self.api_keys,
            s.max_message_bytes,
            "sift.v1",
        )
        tls = (str(s.tls_cert), str(s.tls_key)) if s.tls_cert and s.tls_key else None
        self.http = HttpServer(
            app, s.host, s.http_port, tls, str(s.tls_client_ca) if s.tls_client_ca else None, s.grace_period
        )
        await self.http.start()
        log.info("HTTP/JSON on %s:%d", s.host, self.http.port)

    def reload_api_keys(self) -> None:
        """Re-reads the API key file (with every bundle reload); a bad file is logged and the keys stay."""
        if self.api_keys is None:
            return
        try:
            log.info("%d API keys reloaded from %s", self.api_keys.reload(), self.api_keys.path)
        except ValueError as e:
            log.error("API keys refused, the previous ones stay: %s", e)

    async def load(self, path: Path | None = None) -> tuple[Bundle, Bundle | None, float]:
        """Loads, validates and warms a bundle (the configured one, or `path`) off the event loop, then swaps
        it in and reports SERVING. Returns (new, previous, seconds). One load at a time; a bundle that fails
        raises BundleError and leaves the one serving untouched."""
        async with self._loading:
            if self.store.loaded:  # a reload: the keys are re-read with the bundle
                self.reload_api_keys()
            path = path or self.bundle_path
            threads = ThreadSettings(self.settings.intra_op_threads, self.settings.inter_op_threads)
            start = time.perf_counter()
            first = not self.store.loaded
            try:
                # At start-up the serving process does not wait for the heavy workers: it serves heavy calls
                # itself until they have loaded (at a million products, waiting doubled the cold start).
                # A reload waits for both, so no heavy call meets a worker without its bundle.
                if first:
                    bundle = await asyncio.to_thread(_load_and_warm, path, self.settings, threads)
                else:
                    bundle = await self._load_everywhere(path, threads)
            except BundleError as e:
                metrics.BUNDLE_LOAD_FAILURES.inc()
                log.error("bundle refused: %s (from %s)", e, path)
                raise
            seconds = time.perf_counter() - start
            if not self.store.loaded:  # no call runs yet: time each kind of call alone, for admission
                self.admission.calibrate(await calibration.measure(bundle, self.limits, self.heavy))
            previous = self.store.swap(bundle)  # calls in flight keep the bundle they started with
            # The bundle's objects live as long as it serves: freeze them out of the cyclic collector, so
            # its full collections (pauses every call waiting behind them would pay) skip them.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.bundle_path = path  # what SIGHUP and the directory watch reload from now on
            if previous is not None:
                metrics.BUNDLE.remove(previous.version, str(previous.schema_version))
            metrics.BUNDLE.labels(version=bundle.version, schema_version=str(bundle.schema_version)).set(1)
            for name, capability in SERVICE_CAPABILITY.items():
                # A service whose bundle component is missing is NOT_SERVING, so probes and balancers see it.
                able = capability is None or capability in bundle.capabilities
                await self.set_health(name, SERVING if able else NOT_SERVING)
            replaced = f", replacing {previous.version}" if previous else ""
            log.info("serving bundle %s (loaded and warmed in %.2f s%s)", bundle.version, seconds, replaced)
            if first and self.heavy_pool is not None:
                self._heavy_start = asyncio.ensure_future(self._start_heavy(path, bundle.version))
            return bundle, previous, seconds

    async def _start_heavy(self, path: Path, version: str) -> None:
        """The heavy workers' first load, after this process serves: a failure leaves heavy calls here."""
        async with self._loading:  # a reload meanwhile loads the workers itself, after this
            if self.store.bundle.version != version:
                return
            try:
                loaded = await self._load_and_warm_heavy(path)
            except BundleError as e:
                log.error("heavy workers could not load %s, heavy calls stay in this process: %s", path, e)
                return
            if loaded != version:
                log.error("heavy workers loaded %s from %s, this process serves %s", loaded, path, version)
                return
            assert self.heavy_pool is not None
            self.heavy_pool.ready = True
            log.info("heavy workers loaded bundle %s: heavy calls go to them now", version)

    async def _load_and_warm_heavy(self, path: Path) -> str | None:
        if self.heavy_pool is None:
            return None
        try:
            return await self.heavy_pool.load(path)
        except RuntimeError as e:
            raise BundleError(str(e)) from e

    async def _load_everywhere(self, path: Path, threads: ThreadSettings) -> Bundle:
        """The bundle loaded and warmed here and, at the same time, in every heavy worker: the swap waits
        for both, so a heavy call never meets a worker without the bundle its call started on."""
        here, there = await asyncio.gather(
            asyncio.to_thread(_load_and_warm, path, self.settings, threads),
            self._load_and_warm_heavy(path),
            return_exceptions=True,
        )
        if isinstance(here, BaseException):
            raise here
        if isinstance(there, BaseException):
            raise there
        if there is not None and there != here.version:
            raise BundleError(f"heavy workers loaded {there} from {path}, this process {here.version}")
        if self.heavy_pool is not None:
            self.heavy_pool.ready = True
        return here

    async def reload_quietly(self) -> None:
        """SIGHUP and the directory watch: reload, and on failure keep serving (the error is logged)."""
        with contextlib.suppress(BundleError):
            await self.load()

    async def watch(self, interval: float) -> None:
        """Reloads when the configured bundle's manifest.json changes (mtime or size)."""

        def stamp() -> tuple[float, int] | None:
            try:
                st = (self.bundle_path / MANIFEST).stat()
            except OSError:
                return None
            return st.st_mtime, st.st_size

        seen = stamp()
        while True:
            await asyncio.sleep(interval)
            now = stamp()
            if now is not None and now != seen:
                seen = now
                await self.reload_quietly()

    async def stop(self) -> None:
        """Graceful: health NOT_SERVING for the drain period (calls still answered, so that load balancers
        can move traffic away first), then the port closes and in-flight calls get the grace period."""
        before = metrics.calls_by_code()
        # Calls keep being answered during the drain: refusing them would fail every client that has not
        # yet seen NOT_SERVING, while closing the port later sends GOAWAY, which gRPC clients handle.
        await self.health.enter_graceful_shutdown()
        self.health_status.update(dict.fromkeys(self.health_status, NOT_SERVING))
        await asyncio.sleep(self.settings.drain_period)
        in_flight = metrics.calls_in_flight()
        await asyncio.gather(self.server.stop(self.settings.grace_period), self.stop_http())
        if self.heavy_pool is not None:  # no call is left for them once the server has stopped
            if self._heavy_start is not None:
                self._heavy_start.cancel()
            await self.heavy_pool.close(self.settings.grace_period)
        tracing.shutdown()  # flushes the spans not yet exported
        after = metrics.calls_by_code()
        during = after - before
        # The shutdown's own account: calls cut are ones a handler took and never answered, which graceful
        # shutdown promises never happen. It is the log line's `drain` field (sift-bench drain reads it).
        account = {
            "answered": during["OK"],
            "refused_unavailable": during["UNAVAILABLE"],
            "in_flight_at_close": in_flight,
            "cut": during["CANCELLED"] + during["DEADLINE_EXCEEDED"] + metrics.calls_in_flight(),
            "answered_total": after["OK"],
        }
        log.info(
            "stopped: %s",
            " ".join(f"{key}={value}" for key, value in account.items()),
            extra={FIELDS: {"drain": account}},
        )

    async def stop_http(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None


class HeavyCalls(grpc.aio.ServerInterceptor):
    """Heavy methods' calls before their request is read.

    - **Early refusal.** When admission would refuse the call anyway (a refusal never depends on the call's
      size: server/admission.py), it is refused here, unparsed: under a retry storm of 1,000-title calls no
      refusal parses 45 KB. The refusal is the middleware's own (RESOURCE_EXHAUSTED, the method named,
      `grpc-retry-pushback-ms`), counted in the same metrics.
    - **Routes.** A method path in `routes` gets that handler instead of the servicer's: ScoreRelevance goes
      to the heavy workers as bytes when they run (server/heavy_worker.py)."""

    def __init__(self, admission: Admission, methods: frozenset[str]) -> None:
        self._admission = admission
        self._methods = methods if admission.enabled else frozenset()
        self.routes: dict[str, grpc.RpcMethodHandler] = {}
        self._durations = {
            m: metrics.REQUEST_DURATION.labels(method=m, code=grpc.StatusCode.RESOURCE_EXHAUSTED.name)
            for m in methods
        }

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method.rpartition("/")[2]
        if method in self._methods and (refused := self._admission.refusal(method)) is not None:
            handler = self.routes.get(details.method) or await continuation(details)
            if handler is not None and not (handler.request_streaming or handler.response_streaming):
                return self._refuse(method, refused, handler)
        return self.routes.get(details.method) or await continuation(details)

    def _refuse(
        self, method: str, refused: Overloaded, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        start = time.perf_counter()
        message = f"{method}: {refused}"
        trailing = ((PUSHBACK_KEY, str(refused.pushback_ms)),)
        observe = self._durations[method].observe

        async def refuse(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            try:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=trailing)
            except grpc.aio.InternalError:
                # Sending the status failed: the client left (its deadline passed while the call waited in
                # gRPC core) and there is no one to refuse. A unary handler would never have run, its
                # request never received; gRPC would log this as an error, under overload once a call.
                pass
            finally:
                observe(time.perf_counter() - start)

        # A client-streaming handler that never reads its stream: the request is not even received from
        # gRPC core (a unary handler would wait for its 45 KB first), let alone parsed. The client sees the
        # same unary call refused.
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)


def api_keys(settings: Settings) -> ApiKeys | None:
    """The API keys of --api-keys (read at start); health and reflection are open unless the settings close
    them, AdminService always (it has its own rule)."""
    if settings.api_keys is None:
        return None
    always_open = (health.SERVICE_NAME, reflection.SERVICE_NAME)
    names = (*SERVICE_NAMES, *always_open)
    return ApiKeys(
        settings.api_keys, names, (ADMIN_SERVICE, *(() if settings.api_keys_all_services else always_open))
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS with a client CA) from the configured PEM files; None for plaintext."""
    s = settings
    if s.tls_key is None and s.tls_cert is None:
        if s.tls_client_ca is not None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key: mTLS is TLS with client certificates")
        return None
    if s.tls_key is None or s.tls_cert is None:
        raise ValueError("tls_cert and tls_key go together")
    try:
        pair = (s.tls_key.read_bytes(), s.tls_cert.read_bytes())
        ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
    except OSError as e:
        raise ValueError(f"cannot read a TLS file: {e}") from e
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def _load_and_warm(path: Path, settings: Settings, threads: ThreadSettings) -> Bundle:
    batching = BatchPolicy(settings.batch_max_size, settings.batch_max_wait_us, settings.batch_max_queue)
    bundle = load_bundle(path, threads, batching)
    if bundle.index is not None and settings.search_expansion is not None:
        bundle.index.expansion = settings.search_expansion
    bundle.warm_up()
    return bundle


async def run(settings: Settings) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code."""
    server = SiftServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()  # strong references, so the tasks are not collected

    def reload() -> None:
        task = asyncio.ensure_future(server.reload_quietly())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        if settings.preload:  # a worker: take no connection before it can answer
            await server.load()
            await server.start()
        else:  # bind first, so health checks see NOT_SERVING while the bundle loads
            await server.start()
            await server.load()
    except (BundleError, ValueError, OSError) as e:
        if not isinstance(e, BundleError):
            log.error("cannot start: %s", e)
        await asyncio.gather(server.server.stop(0), server.stop_http())
        return 2
    watcher = (
        asyncio.ensure_future(server.watch(settings.watch_interval)) if settings.watch_interval else None
    )
    try:
        await stop.wait()
        log.info("shutdown signal received")
    finally:
        if watcher:
            watcher.cancel()
        await server.stop()
    return 0
