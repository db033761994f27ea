"""`sift-bench load`: a closed-loop concurrency sweep and open-loop fixed rates, Sift against the echo floor.

Each level runs the echo floor and then Sift back to back, repeat after repeat, so slow drift in a shared
machine's noise hits both alike; every Sift figure is also given as a ratio to the floor of the same
repeat, and repeats are reported as the median with the spread.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field
from typing import Any

import grpc
from tqdm import tqdm

from benchmarks import prom
from benchmarks.loadgen import LoadGenerator, Payload, RunResult, send_check
from server._proto.sift.v1 import info_pb2, info_pb2_grpc


@dataclass
class Target:
    name: str  # "sift", "echo" or a peer's name
    address: str
    metrics_url: str | None = None
    # The same calls in this server's own protocol (a peer's); None: the workload's requests as they are.
    payloads: list[Payload] | None = None


@dataclass
class LoadSpec:
    warmup_s: float
    duration_s: float
    repeats: int
    concurrency: list[int]
    rates: list[float] = field(default_factory=list)  # absolute arrivals per second; empty: from fractions
    load_fractions: list[float] = field(default_factory=list)  # of Sift's closed-loop knee throughput
    arrival: str = "poisson"
    p99_budget_ms: float = 10.0
    timeout_s: float = 10.0
    modes: tuple[str, ...] = ("closed", "open")


def model_info(address: str) -> info_pb2.GetModelInfoResponse:
    """Sift's GetModelInfo, or a clear exit when the address does not serve Sift."""

    async def ask() -> info_pb2.GetModelInfoResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            return await info_pb2_grpc.InfoServiceStub(channel).GetModelInfo(
                info_pb2.GetModelInfoRequest(), timeout=5
            )

    try:
        return asyncio.run(ask())
    except grpc.aio.AioRpcError as e:
        raise SystemExit(f"sift-bench: {address} is not serving Sift ({e.code().name}: {e.details()})") from e


def capture_responses(address: str, payloads: list[Payload]) -> dict[str, bytes]:
    """Sift's reply to the first request of each method, so the echo floor answers with the same bytes."""

    async def capture() -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async with grpc.aio.insecure_channel(address) as channel:
            for path, payload in payloads:
                if path not in out:
                    out[path] = await channel.unary_unary(path)(payload, timeout=10)
        return out

    return asyncio.run(capture())


LATENCY_KEYS = ("p50", "p90", "p99", "p99.9", "max", "mean")


def summarize(result: RunResult) -> dict[str, Any]:
    return {
        "qps": round(result.qps, 1),
        # NaN when no call was answered, so tables still line up.
        "latency_ms": result.latency.summary_ms() or dict.fromkeys(LATENCY_KEYS, float("nan")),
        "by_method_ms": {name: hist.summary_ms() for name, hist in sorted(result.by_method.items())},
        "codes": dict(result.codes),
        "calls": result.latency.count + result.failed.count,
        "failed_latency_ms": result.failed.summary_ms(),
        "client_cpu_cores": round(result.client_cpu_s / result.wall_s, 3) if result.wall_s else 0.0,
        "histogram": result.latency.to_json(),
    }


def _run_one(
    gen: LoadGenerator,
    target: Target,
    payloads: list[Payload],
    spec: LoadSpec,
    mode: str,
    level: float,
    seed: int,
    bar: tqdm,
) -> dict[str, Any]:
    before = prom.scrape(target.metrics_url) if target.metrics_url else None
    base = bar.n
    result = gen.run(
        target.address,
        target.payloads or payloads,
        mode=mode,  # type: ignore[arg-type]
        warmup_s=spec.warmup_s,
        duration_s=spec.duration_s,
        rate=level if mode == "open" else 0.0,
        concurrency=int(level) if mode == "closed" else 1,
        arrival=spec.arrival,  # type: ignore[arg-type]
        timeout_s=spec.timeout_s,
        seed=seed,
        on_progress=lambda t: bar.update(base + t - bar.n),
    )
    bar.update(base + spec.warmup_s + spec.duration_s - bar.n)
    out = summarize(result)
    if mode == "open":
        out["send_check"] = send_check(result, level)
    if before is not None:
        after = prom.scrape(target.metrics_url)
        out["server_breakdown"] = prom.breakdown(before, after)
        if hit_rate := prom.cache_hit_rate(before, after):
            out["cache_hit_rate"] = hit_rate
    return out


def _median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of QPS and each latency figure, with [min, max] as the spread."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 4), "min": min(values), "max": max(values)}

    keys = runs[0]["latency_ms"].keys()
    return {
        "qps": spread([r["qps"] for r in runs]),
        "latency_ms": {k: spread([r["latency_ms"][k] for r in runs]) for k in keys},
        "codes": _sum_codes(runs),
        "client_cpu_cores": spread([r["client_cpu_cores"] for r in runs]),
    }


def _sum_codes(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in runs:
        for code, n in run["codes"].items():
            total[code] = total.get(code, 0) + n
    return total


def _ratios(sift: list[dict[str, Any]], floor: list[dict[str, Any]]) -> dict[str, Any]:
    """Sift / floor per repeat (same repeat, back to back), then the median and spread of those ratios."""
    out: dict[str, Any] = {}
    pairs = list(zip(sift, floor, strict=True))
    for key in ("p50", "p90", "p99", "p99.9"):
        values = [s["latency_ms"][key] / f["latency_ms"][key] for s, f in pairs if f["latency_ms"].get(key)]
        if values:
            out[key] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
    qps = [s["qps"] / f["qps"] for s, f in pairs if f["qps"]]
    if qps:
        out["qps"] = {
            "median": round(statistics.median(qps), 3),
            "min": round(min(qps), 3),
            "max": round(max(qps), 3),
        }
    return out


def run_load(
    targets: list[Target],
    payloads: list[Payload],
    spec: LoadSpec,
    processes: int,
) -> dict[str, Any]:
    """Every mode and level, for every target, `spec.repeats` times. The first target is the floor and the
    last is the one whose knee sets the open-loop rates (given as fractions of it)."""
    results: dict[str, Any] = {"closed": [], "open": []}
    with LoadGenerator(processes) as gen:
        if "closed" in spec.modes:
            results["closed"] = _sweep(
                gen, targets, payloads, spec, "closed", [float(c) for c in spec.concurrency]
            )
        if "open" in spec.modes:
            rates = list(spec.rates)
            if not rates:
                top = knee(results["closed"], targets[-1].name, spec.p99_budget_ms)
                if top is None:
                    raise SystemExit("sift-bench: no closed-loop level met the p99 budget; give --rates")
                rates = [round(top["qps"] * f, 1) for f in spec.load_fractions]
            results["open"] = _sweep(gen, targets, payloads, spec, "open", rates)
    results["knee"] = {t.name: knee(results["closed"], t.name, spec.p99_budget_ms) for t in targets}
    return results


def knee(levels: list[dict[str, Any]], name: str, budget_ms: float) -> dict[str, Any] | None:
    """The closed-loop level with the highest median throughput whose median p99 is within the budget."""
    best = None
    for level in levels:
        med = level["by_target"][name]["median"]
        if med["latency_ms"]["p99"]["median"] <= budget_ms and (
            best is None or med["qps"]["median"] > best["qps"]
        ):
            best = {
                "concurrency": level["level"],
                "qps": med["qps"]["median"],
                "p99_ms": med["latency_ms"]["p99"]["median"],
            }
    return best


def _sweep(
    gen: LoadGenerator,
    targets: list[Target],
    payloads: list[Payload],
    spec: LoadSpec,
    mode: str,
    levels: list[float],
) -> list[dict[str, Any]]:
    runs: dict[tuple[float, str], list[dict[str, Any]]] = {}
    seconds = len(levels) * len(targets) * spec.repeats * (spec.warmup_s + spec.duration_s)
    unit = "in flight" if mode == "closed" else "/s"
    with tqdm(
        total=seconds,
        desc=f"{mode} loop",
        unit="s",
        disable=None,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s",
    ) as bar:
        for repeat in range(spec.repeats):
            for level in levels:
                for target in targets:
                    bar.set_postfix_str(f"{target.name} {level:g} {unit}, repeat {repeat + 1}")
                    run = _run_one(gen, target, payloads, spec, mode, level, repeat, bar)
                    runs.setdefault((level, target.name), []).append(run)
    out = []
    floor = targets[0].name
    for level in levels:
        entry: dict[str, Any] = {"mode": mode, "level": level, "by_target": {}}
        for target in targets:
            repeats = runs[(level, target.name)]
            entry["by_target"][target.name] = {"median": _median_summary(repeats), "repeats": repeats}
            if target.name != floor:
                entry["by_target"][target.name]["ratio_to_floor"] = _ratios(repeats, runs[(level, floor)])
        out.append(entry)
    return out
