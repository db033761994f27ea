"""The head-of-line control (benchmarks/cpu_burner.py): it runs its bursts in a process of its own and says
which scheduling policy it ran under."""

from __future__ import annotations

import sys
import time

from benchmarks import cpu_burner


def test_a_burst_takes_its_cpu_seconds() -> None:
    used = time.process_time()
    bursts = cpu_burner.burn(rate=10_000.0, burst_s=0.002, duration_s=0.001, seed=1)
    assert bursts >= 1
    assert time.process_time() - used >= 0.002 * bursts


def test_the_process_reports_its_policy_and_bursts() -> None:
    burner = cpu_burner.start(rate=200.0, burst_s=0.001, duration_s=0.2)
    out, _ = burner.communicate(timeout=60)
    policy, bursts = out.split()
    assert burner.returncode == 0
    assert policy == ("idle" if sys.platform == "linux" else "normal")
    assert int(bursts) > 0
