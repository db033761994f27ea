"""Multi-process serving: N sift-serve workers on one port, one metrics endpoint for all of them.

Python runs one request's code at a time per process, so on N cores N processes serve up to N times the
calls. Each worker is a whole sift-serve with its own ONNX sessions and event loop; they bind the same
port with SO_REUSEPORT (grpc's default on Linux), so the kernel spreads connections over them. The
usearch index is opened memory-mapped, so the workers share its pages instead of each holding a copy.

This supervisor process loads no model. It serves /metrics from the workers' shared prometheus-client
multiprocess directory, forwards SIGTERM/SIGINT to every worker (each drains as a single server does),
and exits with the first failing worker's code, stopping the others, if one dies on its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from server.config import Settings
from server.ports import free_port

log = logging.getLogger("sift.workers")


def settings_args(settings: Settings, **overrides: Any) -> list[str]:
    """Every setting as an explicit CLI flag, so each worker runs exactly the supervisor's settings."""
    args = []
    for name, value in (settings.model_dump() | overrides).items():
        flag = "--" + name.replace("_", "-")
        if value is None:  # unset optional settings (TLS files) stay unset
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def supervise(settings: Settings) -> int:
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    port = settings.port or free_port(settings.host)
    metrics_dir = tempfile.mkdtemp(prefix="sift-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    args = settings_args(settings, workers=1, port=port, metrics_port=0, preload=True)
    workers = [
        subprocess.Popen([sys.executable, "-m", "server", *args], env=env) for _ in range(settings.workers)
    ]
    log.info("supervising %d workers on %s:%d", len(workers), settings.host, port)
    if settings.metrics_port:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        start_http_server(settings.metrics_port, addr=settings.host, registry=registry)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        while any(w.poll() is None for w in workers):
            for worker in workers:
                if worker.poll() not in (None, 0) and not stopping:
                    log.error(
                        "worker %d exited with code %d; stopping the others", worker.pid, worker.returncode
                    )
                    code = worker.returncode
                    stop(signal.SIGTERM, None)
            time.sleep(0.1)
        codes = [w.returncode for w in workers]
        code = code or next((c for c in codes if c), 0)
        log.info("all workers stopped (exit codes %s)", codes)
        return code
    finally:
        for worker in workers:
            multiprocess.mark_process_dead(worker.pid, metrics_dir)
        shutil.rmtree(metrics_dir, ignore_errors=True)
