"""Servers the harness starts itself: Sift on a bundle, and the echo floor; each in its own process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.echo import write_responses
from server.ports import free_port  # the harness and tests import it from here


def wait_serving(
    target: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None, poll_s: float = 0.05
) -> float:
    """Polls gRPC health until SERVING; returns the seconds waited. A clear error when it never comes."""
    start = time.monotonic()
    last = "no answer"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - start < timeout_s:
            if process is not None and process.poll() is not None:
                raise SystemExit(f"sift-bench: the server at {target} exited with code {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            time.sleep(poll_s)
    raise SystemExit(f"sift-bench: {target} is not SERVING after {timeout_s:.0f} s (last: {last})")


class Process:
    """A child server process, stopped with SIGTERM (then SIGKILL) when the harness is done."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log_file.close()


def start_sift(
    bundle: Path, extra_args: list[str], workdir: Path, name: str = "sift"
) -> tuple[Process, str, str]:
    """sift-serve on `bundle` on free ports; returns (process, gRPC target, metrics URL) once SERVING."""
    port, metrics_port = free_port(), free_port()
    args = [sys.executable, "-m", "server", "--bundle", str(bundle), "--port", str(port)]
    args += ["--metrics-port", str(metrics_port), "--drain-period", "0", *extra_args]
    process = Process(args, workdir / f"{name}.log")
    target = f"127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_serving(target, process=process.popen)
        wait_heavy_workers(metrics_url, args, process.popen)
    except SystemExit as e:
        process.stop()
        log = process.log.read_text()[-2000:]
        raise SystemExit(f"{e}\nsift-serve's log ends:\n{log}") from None
    except BaseException:  # interrupted before the caller holds the process to stop it
        process.stop()
        raise
    return process, target, metrics_url


def _flag(args: list[str], name: str, default: int) -> int:
    """The last value given for an integer sift-serve flag, as `--name N` or `--name=N`."""
    value = default
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = int(args[i + 1])
        elif arg.startswith(name + "="):
            value = int(arg.split("=", 1)[1])
    return value


def wait_heavy_workers(
    metrics_url: str, args: list[str], process: subprocess.Popen | None = None, timeout_s: float = 120.0
) -> float:
    """Once SERVING, a server answers heavy calls itself until its heavy workers have loaded the bundle
    (sift_heavy_workers_ready): a measurement of the served steady state waits for them. Returns the
    seconds waited (0 without heavy workers)."""
    if _flag(args, "--heavy-workers", 1) == 0:
        return 0.0
    workers = _flag(args, "--workers", 1)
    if workers == 0:  # one serving process per usable core per intra-op thread, as sift-serve counts them
        from server.__main__ import usable_cores  # here: it imports the whole server

        workers = max(usable_cores() // _flag(args, "--intra-op-threads", 1), 1)
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"sift-bench: the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(metrics_url, timeout=2) as response:
                text = response.read().decode()
            match = re.search(r"^sift_heavy_workers_ready (\S+)$", text, re.MULTILINE)
            if match and float(match.group(1)) >= workers:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"sift-bench: heavy workers not ready after {timeout_s:.0f} s ({metrics_url})")


def start_echo(
    responses: dict[str, bytes], workdir: Path, stall_at: float = 0.0, stall_ms: float = 0.0
) -> tuple[Process, str]:
    """The echo floor answering `responses`; returns (process, target) once it listens."""
    path = Path(tempfile.mkstemp(suffix=".json", dir=workdir)[1])
    write_responses(path, responses)
    port = free_port()
    args = [sys.executable, "-m", "benchmarks.echo", "--responses", str(path), "--port", str(port)]
    args += ["--stall-at", str(stall_at), "--stall-ms", str(stall_ms)]
    process = Process(args, workdir / "echo.log")
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise SystemExit(f"sift-bench: the echo server exited: {process.log.read_text()[-2000:]}")
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return process, target
            except grpc.FutureTimeoutError:
                continue
    process.stop()
    raise SystemExit("sift-bench: the echo server did not start within 30 s")


def children(pid: int) -> set[int]:
    """A process's child processes, from /proc/<pid>/task/*/children; Linux only."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            listed = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that ended since the listing (such as a load thread)
            continue
        out.update(int(c) for c in listed)
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, each before its own children (serving workers, their heavy workers,
    multiprocessing's tracker); one that exits during the walk is left out with its children."""
    try:
        below = sorted(children(pid))
    except FileNotFoundError:
        return []
    out = []
    for child in below:
        out += [child, *descendants(child)]
    return out


def proc_status(pid: int) -> dict[str, int]:
    """A process's VmRSS, RssAnon (private memory), RssFile (mapped files), in bytes, and Threads, from
    /proc/<pid>/status; Linux only."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
        elif key == "Threads":
            out[key] = int(value)
    return out
