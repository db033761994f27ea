"""sift-serve settings. Every field is a CLI flag (--kebab-case) and a SIFT_* environment variable;
its documentation is the string beneath it, which is also the flag's --help text."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SettingsT = TypeVar("SettingsT", bound=type[BaseSettings])
HeavyWorkerPriority = Literal["adaptive", "idle", "normal"]
"""When heavy workers run under SCHED_IDLE (server/heavy_worker.py): the setting and the workers share it."""


def env_in_help(cls: SettingsT) -> SettingsT:
    """Append each field's environment variable to its --help text, so that `--help` documents both ways of
    setting it (the CLI parser reads the descriptions when it is built, after this runs)."""
    prefix = cls.model_config.get("env_prefix", "")
    for name, field in cls.model_fields.items():
        field.description = f"{field.description or ''} [env: {prefix}{name.upper()}]".strip()
    return cls


@env_in_help
class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIFT_",
        cli_kebab_case=True,
        cli_prog_name="sift-serve",
        cli_implicit_flags=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    bundle: Path = Path("bundles/default")
    """Directory of the artifact bundle to serve (the one holding manifest.json)."""
    host: str = "127.0.0.1"
    """Address the gRPC and metrics servers bind to; 0.0.0.0 or [::] to accept remote clients."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the chosen port is logged)."""
    metrics_port: int = Field(9095, ge=0, le=65535)
    """Prometheus /metrics port, served apart from gRPC; 0 disables it."""
    http_port: int = Field(0, ge=0, le=65535)
    """HTTP/JSON port beside gRPC: the same calls at the same paths (POST
    /sift.v1.IntentService/ClassifyIntent with the request as JSON), GET /health and GET /openapi.json, served
    from the same process and event loop (server/transport/http.py); 0 turns it off. With tls_cert it is
    HTTPS (and mTLS with tls_client_ca)."""
    workers: int = Field(1, ge=0)
    """Serving processes sharing the port (SO_REUSEPORT) and one /metrics endpoint; 0 means one per core
    (cores // intra_op_threads). Rule: workers x intra_op_threads <= cores, so that no model run waits
    for a core another holds; the server logs a warning when the settings break it."""
    preload: bool = False
    """Load and warm the bundle before binding the port (health is then never NOT_SERVING). Workers run
    this way, so that no connection the kernel hands to a worker finds it still loading."""
    intra_op_threads: int = Field(1, ge=1)
    """onnxruntime threads per model call. Rule: intra_op_threads x worker processes <= cores. The models are
    small, so one thread per call and concurrency across calls wins on CPU."""
    inter_op_threads: int = Field(1, ge=1)
    """onnxruntime threads for independent graph branches (the student graphs have none)."""
    batch_max_size: int = Field(1, ge=1)
    """Most rows one model run takes from the micro-batcher; 1 turns batching off, so each call runs its
    model inline. Off is the default because it measured fastest for Sift's small models at every
    concurrency (benchmarks/results/levers)."""
    batch_max_wait_us: int = Field(0, ge=0)
    """Microseconds the first call of a batch waits for others; 0 batches only what queued while the
    previous run was busy."""
    batch_max_queue: int = Field(1024, ge=1)
    """Rows that may wait per model before calls are refused with RESOURCE_EXHAUSTED."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The asyncio event loop implementation; uvloop measured faster under grpc.aio
    (benchmarks/results/levers)."""
    search_expansion: int | None = Field(None, ge=1)
    """usearch's expansion (ef) for Search's graph walk: higher finds more of the exact top k, and costs
    more. Unset, the index's own (server/runtime/index.py SEARCH_EXPANSION, 128), which training's figures
    are measured with; the report's real_queries part measures recall and latency at several on real
    queries (reports/wands)."""
    cache_size: int = Field(0, ge=0)
    """Entries in each response cache (ClassifyIntent answers; query vectors for Search and EmbedQuery),
    keyed on the normalized query, the call's parameters and the bundle version; 0 turns caching off.
    Worth it for skewed traffic: see benchmarks/results/levers for the hit rate and latency it buys."""
    timing_metadata: bool = False
    """Send each call's featurize, queue, inference and total time (microseconds) as trailing metadata
    (sift-featurize-us, sift-queue-us, sift-inference-us, sift-total-us), as TEI does with headers. Off
    by default: measured at up to 6% of ClassifyIntent's p50 and 4% of its throughput at 64 in flight
    (benchmarks/results/levers)."""
    drain_period: float = Field(1.0, ge=0)
    """Seconds after SIGTERM/SIGINT during which health reports NOT_SERVING while calls are still answered,
    so that load balancers and clients watching health move traffic away before the port closes."""
    grace_period: float = Field(5.0, ge=0)
    """Seconds in-flight calls get to finish once the port closes (new calls then get UNAVAILABLE through
    gRPC's GOAWAY), after the drain period."""
    max_concurrent_requests: int = Field(256, ge=1)
    """Calls one worker holds at once, running or waiting for the event loop; beyond it gRPC answers
    RESOURCE_EXHAUSTED at once ("Concurrent RPC limit exceeded"), so a burst cannot queue without bound
    and the calls admitted keep their latency. 0 is not allowed: an unbounded queue is how latency
    collapses under overload."""
    max_pending_requests: int = Field(512, ge=1)
    """Calls gRPC core may hold that the event loop has not picked up yet: when the loop is saturated, calls
    wait there, before admission (--admission-target-ms) can see them. Beyond it core refuses new calls at
    once with status CANCELLED (core's choice of code, not Sift's, and one standard retry policies do not
    retry), so it is the last line of defence: large enough that admission, which refuses with
    RESOURCE_EXHAUSTED and a pushback, answers a flood of a few hundred callers itself; sift-bench overload
    counts how often it still fires (benchmarks/results/overload)."""
    admission_target_ms: float = Field(100.0, ge=0)
    """Admission by cost: calls are admitted while the estimated work already admitted and unfinished (the
    new call's queueing delay) is under this many milliseconds; the rest get RESOURCE_EXHAUSTED at once with
    `grpc-retry-pushback-ms` trailing metadata saying when to retry (server/admission.py). 0 turns it off.
    Default 100, from sift-bench overload (benchmarks/results/overload-admission): in its flood of 1,000-title
    calls the heavy lane held one call at a time (the 50 ms heavy methods may fill is less than one such
    call's estimated cost), so the flood's p99 is that call's own time on cores shared with the refusals,
    not queueing, and a lower target would not shorten it."""
    admission_heavy_methods: str = "ScoreRelevance"
    """Comma-separated methods shed first under overload: they may fill only admission_heavy_share of the
    target, so the cheap calls a search stack makes on every query (ClassifyIntent, Search) keep room."""
    admission_heavy_share: float = Field(0.5, gt=0, le=1)
    """Share of --admission-target-ms the heavy methods may fill; 1 treats every method alike."""
    slice_rows: int = Field(32, ge=0)
    """A call with more rows than this (ScoreRelevance candidates) is featurized in slices of this many,
    yielding the event loop between them, so cheap calls do not wait behind it; 0 featurizes in one go."""
    offload_rows: int = Field(64, ge=0)
    """Model runs of at least this many rows run on a worker thread beside the event loop (onnxruntime
    releases the GIL); smaller ones run inline, where they are fastest. 0 runs every model inline."""
    offload_min_ms: float = Field(1.0, ge=0)
    """Runs of --offload-rows rows or more that the model is expected to finish in less than this many
    milliseconds (its own time per row, learnt from its runs of many rows) still run inline while the event
    loop has no other call to serve: the hand-over to the thread and back then costs more than it saves (a
    ScoreRelevance of 100 product ids, whose relevance model runs 100 rows in about 0.4 ms, was answered
    0.52 ms sooner at one call in flight; benchmarks/results/offload-min). 0 offloads by rows alone."""
    heavy_workers: int = Field(1, ge=0)
    """Worker processes that score each ScoreRelevance of at least --offload-rows titles (or 8x as many
    product ids, which cost far less each), so that its featurization (Python, holding the GIL for tens of
    milliseconds at 1,000 titles) never stalls the cheap calls on the event loop (server/heavy_worker.py);
    they load the same bundle and follow every reload. Admission queues their work in a lane of its own. 0
    scores every call in the serving process."""
    heavy_worker_nice: int = Field(0, ge=0, le=19)
    """Niceness added to the heavy workers: above 0 the serving process gets the cores first."""
    heavy_worker_priority: HeavyWorkerPriority = "adaptive"
    """When the heavy workers score under Linux's SCHED_IDLE policy (CPU time nothing else wants; any task
    that wakes takes the core back at once): "adaptive" while this process has admitted a cheap call
    (ClassifyIntent, Search, EmbedQuery) in the last second, so cheap calls keep their latency beside heavy
    ones and a flood of heavy calls alone still gets its share of the cores; "idle" always; "normal" never.
    Measured in benchmarks/results/overload-admission."""
    max_connection_age: float = Field(0.0, ge=0)
    """Seconds after which a client connection is asked to reconnect (GOAWAY; calls in flight get the grace
    period), so that long-lived channels spread over replicas added since; 0 keeps connections forever."""
    max_query_chars: int = Field(512, ge=1)
    """Longest query or title text accepted, in characters; longer ones get INVALID_ARGUMENT."""
    max_candidates: int = Field(1000, ge=1)
    """Most candidates one ScoreRelevance call may carry."""
    max_k: int = Field(1000, ge=1)
    """Largest k a Search call may ask for."""
    max_batch_items: int = Field(64, ge=1)
    """Most items one ClassifyIntentBatch, SearchBatch or EmbedQueryBatch call may carry (more get
    INVALID_ARGUMENT). A batch is one model run and counts as its number of items under admission
    (--admission-target-ms); a run of at least --offload-rows rows goes to the model thread (unless it is
    short and the event loop idle: --offload-min-ms)."""
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """gRPC receive and send message size cap; 1,000 title candidates fit well within the default 4 MiB."""
    tls_cert: Path | None = None
    """PEM certificate chain of the server; with tls_key, gRPC is served over TLS only."""
    tls_key: Path | None = None
    """PEM private key for tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle: when set (with tls_cert), clients must present a certificate it signed (mTLS)."""
    api_keys: Path | None = None
    """File of API keys for ordinary calls: one key per line (16 characters or more), optionally followed by
    the comma-separated services it may call (IntentService or sift.v1.IntentService; all when none given).
    Clients send `authorization: Bearer <key>`; a missing or unknown key gets UNAUTHENTICATED (HTTP 401), a
    key without rights PERMISSION_DENIED (403). Health, reflection and AdminService (which has admin_token)
    need none. Re-read with the bundle (SIGHUP, ReloadBundle, the directory watch); a bad file is refused and
    the keys in force stay. Unset: no keys."""
    api_keys_all_services: bool = False
    """With api_keys: health checks, reflection and /openapi.json need a key too (a key limited to some
    services must list grpc.health.v1.Health or grpc.reflection.v1alpha.ServerReflection to call them)."""
    otlp_endpoint: str = ""
    """OpenTelemetry collector (OTLP/gRPC, host:port or http(s)://host:port) to export traces to: each call
    is a span, child of the client's W3C traceparent (gRPC metadata or HTTP header), with featurize, model,
    index and rules spans beneath it. Empty: no tracing, and nothing of OpenTelemetry is loaded."""
    otlp_service_name: str = "sift"
    """service.name of the traces' resource."""
    otlp_sample_ratio: float = Field(1.0, ge=0, le=1)
    """Share of calls without a client traceparent that are traced; a call with one follows its client's
    sampled flag. Each traced call costs span work on the event loop (benchmarks/results/tracing)."""
    admin_token: str = ""
    """When set, AdminService calls (ReloadBundle) must send `authorization: Bearer <token>` metadata and
    may come from anywhere; when empty, they are accepted from localhost only. Prefer the environment
    variable SIFT_ADMIN_TOKEN to the flag, which shows in the process list."""
    watch_interval: float = Field(0.0, ge=0)
    """Seconds between checks of the bundle directory's manifest.json; a change reloads the bundle (a bad
    one is refused and the old one keeps serving). 0 turns watching off; SIGHUP and
    AdminService.ReloadBundle reload on demand."""
    log_level: str = "INFO"
    """Python logging level: DEBUG, INFO, WARNING or ERROR."""
