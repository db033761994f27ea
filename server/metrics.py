"""Every Prometheus object Sift exports, and nothing else. All names start with `sift_`."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram

# 50 us x 1.5^n up to ~5 s: fine resolution where a CPU model answers, coarse in the tail.
LATENCY_BUCKETS = tuple(round(50e-6 * 1.5**n, 9) for n in range(29))

REQUEST_DURATION = Histogram(
    "sift_request_duration_seconds",
    "Time from receiving an RPC to returning its answer, by method and gRPC status code.",
    ["method", "code"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "sift_requests_in_flight",
    "RPCs being handled right now, by method (summed over live worker processes).",
    ["method"],
    multiprocess_mode="livesum",
)
INFERENCE_DURATION = Histogram(
    "sift_inference_duration_seconds",
    "Time in one onnxruntime call, by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_BATCH_SIZE = Histogram(
    "sift_inference_batch_size",
    "Rows in one onnxruntime call, by model.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
QUEUE_DURATION = Histogram(
    "sift_queue_duration_seconds",
    "Time a batch's oldest call waited in the micro-batcher before its model run, by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
FEATURIZE_DURATION = Histogram(
    "sift_featurize_duration_seconds",
    "Time turning request texts into model inputs, by method.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "sift_cache_requests_total",
    "Response cache lookups by method and result (hit or miss); absent when the cache is off.",
    ["method", "result"],
)
# A gauge rather than an Info: Info has no multiprocess mode, and workers share one endpoint.
BUNDLE = Gauge(
    "sift_bundle_info",
    "The artifact bundle being served: 1 for the version in use.",
    ["version", "schema_version"],
    multiprocess_mode="max",
)
HEAVY_WORKERS_READY = Gauge(
    "sift_heavy_workers_ready",
    "Serving processes whose heavy workers hold the serving bundle, so heavy calls go to them; a process "
    "answers heavy calls itself while its workers load at start-up.",
    multiprocess_mode="livesum",
)
BUNDLE_LOAD_FAILURES = Counter("sift_bundle_load_failures_total", "Bundles refused at load time.")

ADMISSION_REFUSED = Counter(
    "sift_admission_refused_total",
    "Calls refused by admission (RESOURCE_EXHAUSTED with grpc-retry-pushback-ms) because the estimated work "
    "queued ahead was over the delay target, by method.",
    ["method"],
)
AUTH_REFUSED = Counter(
    "sift_auth_refused_total",
    "Calls refused for their API key (--api-keys): UNAUTHENTICATED (missing or unknown key) or "
    "PERMISSION_DENIED (the key may not call the service), by code.",
    ["code"],
)


def calls_by_code() -> Tally[str]:
    """RPCs this process has finished since it started, by gRPC status code (all methods)."""
    tally: Tally[str] = Tally()
    for metric in REQUEST_DURATION.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                tally[sample.labels["code"]] += int(sample.value)
    return tally


def calls_in_flight() -> int:
    """RPCs this process's handlers hold right now."""
    return int(sum(s.value for m in REQUESTS_IN_FLIGHT.collect() for s in m.samples))
