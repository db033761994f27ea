"""The head-of-line case's control: a process that has nothing to do with Sift but takes CPU as its heavy
calls do, in bursts of the same length at the same Poisson rate, under the same scheduling policy as Sift's
heavy workers while cheap calls are about (Linux's SCHED_IDLE, server/heavy_worker.py).

ClassifyIntent's p99 beside it, over its p99 alone, is what background work of that CPU costs the cheap calls
on this machine, whatever the server does: the floor under `sift-bench overload`'s head-of-line figure.

    python -m benchmarks.cpu_burner --rate 4.5 --burst 0.045 --duration 6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import zlib

import numpy as np

from server.heavy_worker import enter_idle_policy


def burn(rate: float, burst_s: float, duration_s: float, seed: int = 0) -> int:
    """Bursts of `burst_s` CPU seconds at Poisson arrivals of `rate` per second, for `duration_s`; a burst
    that arrives while one runs waits for it, as a call does for the one worker. A burst's work is a heavy
    call's kind: Python string hashing and dictionaries (featurization), then matrix products on fresh arrays
    (model runs), in turns. Returns the bursts run."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((384, 384)).astype(np.float32)
    words = [f"word{i}" for i in range(512)]
    start = time.monotonic()
    due = start + rng.exponential(1 / rate)
    bursts = 0
    while due < start + duration_s:
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        used = time.process_time()
        while time.process_time() - used < burst_s:
            counts: dict[int, int] = {}
            for word in words:
                key = zlib.crc32(word.encode()) % 4096
                counts[key] = counts.get(key, 0) + 1
            np.ones((64, 384), np.float32) @ weights
        bursts += 1
        due += rng.exponential(1 / rate)
    return bursts


def start(rate: float, burst_s: float, duration_s: float, seed: int = 0) -> subprocess.Popen[str]:
    """The burner in a process of its own, burning from about now; wait() for it to finish."""
    args = [sys.executable, "-m", "benchmarks.cpu_burner", "--rate", str(rate), "--burst", str(burst_s)]
    args += ["--duration", str(duration_s), "--seed", str(seed)]
    # One thread, as a heavy worker's model runs: numpy's BLAS would spread a product over every core.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="bursts per second")
    parser.add_argument("--burst", type=float, required=True, help="CPU seconds per burst")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # The heavy workers' own call (this process has one thread, so it is the whole process).
    policy = "normal" if enter_idle_policy() is not None else "idle"
    bursts = burn(args.rate, args.burst, args.duration, args.seed)
    print(f"{policy} {bursts}")


if __name__ == "__main__":
    main()
