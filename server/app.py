"""Assembles the grpc.aio server: servicers, per-service health, reflection, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from server import metrics
from server._proto.sift.v1 import (
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.bundle import Bundle, BundleError, load_bundle
from server.config import Settings
from server.runtime.batcher import BatchPolicy
from server.runtime.onnx import ThreadSettings
from server.service.info import InfoService
from server.service.intent import IntentService
from server.service.relevance import RelevanceService
from server.service.retrieval import RetrievalService
from server.service.store import BundleStore
from server.service.validation import Limits
from server.transport.servicers import InfoServicer, IntentServicer, RelevanceServicer, RetrievalServicer

log = logging.getLogger("sift.server")

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (intent_pb2, "IntentService"),
        (relevance_pb2, "RelevanceService"),
        (retrieval_pb2, "RetrievalService"),
        (info_pb2, "InfoService"),
    )
)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Health service name -> the bundle capability it needs (None: always served once a bundle is loaded).
SERVICE_CAPABILITY: dict[str, str | None] = dict(
    zip(("", *SERVICE_NAMES), (None, "intent", "relevance", "retrieval", None), strict=True)
)


class SiftServer:
    """One serving process: binds first (health NOT_SERVING), loads and warms the bundle, then SERVING."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = BundleStore()
        limits = Limits(
            max_query_chars=settings.max_query_chars,
            max_candidates=settings.max_candidates,
            max_k=settings.max_k,
        )
        cap = settings.max_message_bytes
        self.server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", cap), ("grpc.max_send_message_length", cap)]
        )
        cache, timed = settings.cache_size, settings.timing_metadata
        intent_pb2_grpc.add_IntentServiceServicer_to_server(
            IntentServicer(IntentService(self.store, limits, cache), timed), self.server
        )
        relevance_pb2_grpc.add_RelevanceServiceServicer_to_server(
            RelevanceServicer(RelevanceService(self.store, limits), timed), self.server
        )
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
            RetrievalServicer(RetrievalService(self.store, limits, cache), timed), self.server
        )
        info_pb2_grpc.add_InfoServiceServicer_to_server(
            InfoServicer(InfoService(self.store), timed), self.server
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0

    async def start(self) -> None:
        if not self.store.loaded:
            for name in ("", *SERVICE_NAMES):
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        await self.server.start()
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, addr=self.settings.host)
        log.info(
            "listening on %s:%d (metrics on %d)", self.settings.host, self.port, self.settings.metrics_port
        )

    async def load(self) -> Bundle:
        """Loads, validates and warms the bundle off the event loop, then reports SERVING."""
        threads = ThreadSettings(self.settings.intra_op_threads, self.settings.inter_op_threads)
        start = time.perf_counter()
        try:
            bundle = await asyncio.to_thread(_load_and_warm, self.settings, threads)
        except BundleError:
            metrics.BUNDLE_LOAD_FAILURES.inc()
            raise
        self.store.swap(bundle)
        metrics.BUNDLE.labels(version=bundle.version, schema_version=str(bundle.schema_version)).set(1)
        for name, capability in SERVICE_CAPABILITY.items():
            # A service whose bundle component is missing stays NOT_SERVING, so probes and balancers see it.
            able = capability is None or capability in bundle.capabilities
            await self.health.set(name, SERVING if able else NOT_SERVING)
        log.info(
            "serving bundle %s (loaded and warmed in %.2f s)", bundle.version, time.perf_counter() - start
        )
        return bundle

    async def stop(self) -> None:
        """Graceful: health NOT_SERVING and new calls refused during the drain period, then the port closes
        and in-flight calls get the grace period to finish."""
        await self.health.enter_graceful_shutdown()
        self.store.close()
        await asyncio.sleep(self.settings.drain_period)
        await self.server.stop(self.settings.grace_period)
        log.info("stopped")


def _load_and_warm(settings: Settings, threads: ThreadSettings) -> Bundle:
    batching = BatchPolicy(settings.batch_max_size, settings.batch_max_wait_us, settings.batch_max_queue)
    bundle = load_bundle(settings.bundle, threads, batching)
    bundle.warm_up()
    return bundle


async def run(settings: Settings) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code."""
    server = SiftServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if settings.preload:  # a worker: take no connection before it can answer
            await server.load()
            await server.start()
        else:  # bind first, so health checks see NOT_SERVING while the bundle loads
            await server.start()
            await server.load()
    except BundleError as e:
        log.error("bundle refused: %s", e)
        await server.server.stop(0)
        return 2
    try:
        await stop.wait()
        log.info("shutdown signal received")
    finally:
        await server.stop()
    return 0
