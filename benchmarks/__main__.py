"""sift-bench: load benchmarks a search team can trust to decide capacity.

  sift-bench load    open- and closed-loop load on Sift, against a bare gRPC echo floor in the same run
  sift-bench models  each bundle model against its teacher, per call, at batch 1 and 32
  sift-bench peer    Sift against MLServer serving the same ONNX intent model, same workload
  sift-bench startup cold start to SERVING, and the memory of one serving process
  sift-bench soak    a long mixed open-loop run that fails on RSS growth or p99 drift
  sift-bench drain   SIGTERM under open-loop load: every call sent is answered, refused, or lost (must be 0)
  sift-bench overload  1x-10x capacity and a retry flood: goodput, admitted latency, refusals by code
  sift-bench ray-labelling   teacher labelling throughput on Ray at 1 and 2 CPUs against one process
  sift-bench scale   one replica at 10k, 100k and 1M products: build, update, memory, latency, recall
  sift-bench http    HTTP/JSON's p50 against gRPC's on one server, interleaved in one run
  sift-bench tracing p50 with --otlp-endpoint against without, interleaved in one run
  sift-bench batch   per-query cost of batch calls at batch 1, 8 and 32 against the same single calls

Each writes results.json (every raw figure), README.md (tables) and PNG plots into --output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import report
from benchmarks.load import LoadSpec, Target, capture_responses, model_info, run_load
from benchmarks.servers import Process, free_port, start_echo, start_sift
from benchmarks.workload import (
    CallShape,
    build_payloads,
    draw,
    parse_mix,
    product_ids,
    read_queries,
    synthetic_queries,
)

RESULTS = Path("benchmarks/results")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_target_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bundle", type=Path, help="start sift-serve on this bundle for the run (local)")
    where.add_argument(
        "--target",
        default=os.environ.get("SIFT_TARGET"),
        help="host:port of a running Sift (env SIFT_TARGET)",
    )
    parser.add_argument(
        "--metrics-url", help="its Prometheus endpoint (default with --bundle: the one started)"
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra sift-serve flag (with --bundle)"
    )
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        help="NAME='sift-serve flags': one more Sift in the same run, with --bundle; the first variant "
        "is the baseline of the variants table",
    )


def add_workload_args(parser: argparse.ArgumentParser, default: str = "intent") -> None:
    parser.add_argument(
        "--workload", default=default, help="a call or a mix: intent=0.6,search=0.3,relevance=0.1"
    )
    parser.add_argument("--queries", default="synthetic", help="FILE (.txt/.csv/.tsv/.jsonl) or 'synthetic'")
    parser.add_argument("--query-dist", choices=("uniform", "zipf"), default="uniform")
    parser.add_argument("--distinct-queries", type=int, default=2000, help="synthetic queries to draw from")
    parser.add_argument("--top-k", type=int, default=5, help="ClassifyIntent top_k")
    parser.add_argument("--k", type=int, default=10, help="Search k")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per ScoreRelevance call")
    parser.add_argument("--candidates-by", choices=("id", "text"), default="id")
    parser.add_argument(
        "--search-mode",
        choices=("", "dense", "lexical", "hybrid"),
        default="",
        help="Search's mode; empty (default) = the bundle's default mode",
    )


def add_load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("closed", "open", "both"), default="both")
    parser.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--rates", type=_floats, default=[], help="open-loop arrivals/s (default: fractions)")
    parser.add_argument("--load-fractions", type=_floats, default=[0.25, 0.5, 0.75], help="of Sift's knee")
    parser.add_argument("--arrival", choices=("poisson", "constant"), default="poisson")
    parser.add_argument("--p99-budget-ms", type=float, default=10.0, help="the knee's p99 budget")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds per level sent first, not measured"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    parser.add_argument("--seed", type=int, default=0)


def prepare_payloads(args: argparse.Namespace, address: str) -> tuple[list, str]:
    """The serialized requests of the workload and a one-line description of them."""
    import asyncio

    import grpc

    mix = parse_mix(args.workload)
    titles: list[str] = []
    if args.queries == "synthetic":
        pool, titles = synthetic_queries(args.distinct_queries, seed=args.seed)
    else:
        pool = read_queries(Path(args.queries))
    queries = draw(pool, max(4 * args.distinct_queries, 4000), args.query_dist, args.seed)
    shape = CallShape(
        top_k=args.top_k,
        k=args.k,
        candidates=args.candidates,
        candidates_by=args.candidates_by,
        search_mode=args.search_mode,
    )
    ids: list[str] = []
    if "relevance" in mix and shape.candidates_by == "id":

        async def fetch() -> list[str]:
            async with grpc.aio.insecure_channel(address) as channel:
                return await product_ids(channel, shape.candidates)

        ids = asyncio.run(fetch())
    if "relevance" in mix and shape.candidates_by == "text" and not titles:
        titles = pool
    payloads = build_payloads(mix, queries, shape, args.seed, ids, titles)
    parts = []
    for name, weight in mix.items():
        extra = {
            "intent": f"top_k {shape.top_k}",
            "search": f"k {shape.k}, mode {shape.search_mode or 'the bundle default'}",
            "embed": "",
            "relevance": f"{shape.candidates} candidates by {shape.candidates_by}",
        }[name]
        parts.append(f"{weight:.0%} {name}" + (f" ({extra})" if extra else ""))
    source = "synthetic catalogue queries" if args.queries == "synthetic" else args.queries
    return payloads, f"{', '.join(parts)}; {args.query_dist} over {len(set(pool))} {source}"


def load_spec(args: argparse.Namespace, modes: tuple[str, ...]) -> LoadSpec:
    """The load shape from the flags of add_load_args."""
    return LoadSpec(
        warmup_s=args.warmup,
        duration_s=args.duration,
        repeats=args.repeats,
        concurrency=args.concurrency,
        rates=args.rates,
        load_fractions=args.load_fractions,
        arrival=args.arrival,
        p99_budget_ms=args.p99_budget_ms,
        timeout_s=args.timeout,
        modes=modes,
    )


def cmd_load(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sift-bench-"))
    processes = []
    try:
        sifts: list[Target] = []
        if args.bundle:
            for name, flags in args.variant or [("sift", "")]:
                serve_args = [*args.serve_arg, *shlex.split(flags)]
                process, address, metrics_url = start_sift(args.bundle, serve_args, workdir, name)
                processes.append(process)
                sifts.append(Target(name, address, args.metrics_url or metrics_url))
        elif args.target:
            sifts.append(Target("sift", args.target, args.metrics_url))
        else:
            raise SystemExit("sift-bench: give --bundle DIR (start Sift here) or --target HOST:PORT")
        address = sifts[0].address
        info = model_info(address)
        payloads, description = prepare_payloads(args, address)
        echo, echo_address = start_echo(capture_responses(address, payloads), workdir)
        processes.append(echo)
        targets = [Target("echo", echo_address), *sifts]
        spec = load_spec(args, ("closed", "open") if args.mode == "both" else (args.mode,))
        results = run_load(targets, payloads, spec, args.processes)
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "environment": report.environment(),
        "bundle_version": info.bundle_version,
        "target": args.target or f"sift-serve --bundle {args.bundle}",
        "workload": args.workload,
        "calls_description": description,
        "processes": args.processes,
        "targets": [t.name for t in targets],
        "variants": {name: flags for name, flags in args.variant or []},
        "spec": spec.__dict__ | {"modes": list(spec.modes)},
        "results": results,
    }


def model_version(bundle: Path) -> str:
    import json

    return json.loads((bundle / "manifest.json").read_text())["bundle_version"]


def _variant(text: str) -> tuple[str, str]:
    name, sep, flags = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS, got {text!r}")
    return name, flags


def cmd_peer(args: argparse.Namespace) -> dict[str, Any]:
    """Sift and MLServer on the same bundle's intent model, same queries, same load, plus the echo floor."""
    from benchmarks import peer

    venv = peer.ensure_venv(args.venv.resolve())
    workdir = Path(tempfile.mkdtemp(prefix="sift-bench-peer-"))
    processes = []
    mlserver = None
    try:
        sift, address, metrics_url = start_sift(args.bundle, args.serve_arg, workdir)
        processes.append(sift)
        info = model_info(address)
        args.workload = "intent"
        payloads, description = prepare_payloads(args, address)
        queries = [_intent_query(p) for _, p in payloads]
        peer_payloads = [(peer.MODEL_INFER_PATH, b) for b in peer.infer_payloads(venv, queries)]
        port = free_port()
        mlserver = peer.start_mlserver(venv, args.bundle.resolve(), workdir, port)
        echo, echo_address = start_echo(capture_responses(address, payloads), workdir)
        processes.append(echo)
        targets = [
            Target("echo", echo_address),
            Target("mlserver", f"127.0.0.1:{port}", payloads=peer_payloads),
            Target("sift", address, metrics_url),
        ]
        spec = load_spec(args, ("closed",))
        results = run_load(targets, payloads, spec, args.processes)
    finally:
        if mlserver is not None:
            peer.stop_mlserver(mlserver)
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "environment": report.environment() | {"mlserver": peer.MLSERVER_VERSION},
        "bundle_version": info.bundle_version,
        "target": f"sift-serve and mlserver on {args.bundle}",
        "workload": "intent",
        "calls_description": description + "; MLServer gets the same queries as KServe-V2 ModelInfer calls",
        "processes": args.processes,
        "targets": [t.name for t in targets],
        "spec": spec.__dict__ | {"modes": list(spec.modes)},
        "results": results,
        "versus_peer": _versus(results, "sift", "mlserver"),
    }


class SiftRun(NamedTuple):
    process: Process
    address: str
    metrics_url: str
    common: dict[str, Any]  # the result's fields every command writes
    payloads: list
    workdir: Path  # removed afterwards, with anything else the command started in it


@contextlib.contextmanager
def one_sift(args: argparse.Namespace, serve_args: list[str]) -> Iterator[SiftRun]:
    """sift-serve on args.bundle with the workload's payloads prepared; stops it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sift-bench-{args.command}-"))
    sift = None
    try:
        sift, address, metrics_url = start_sift(args.bundle, serve_args, workdir)
        info = model_info(address)
        payloads, description = prepare_payloads(args, address)
        common = {
            "environment": report.environment(),
            "bundle_version": info.bundle_version,
            "workload": args.workload,
            "calls_description": description,
        }
        yield SiftRun(sift, address, metrics_url, common, payloads, workdir)
    finally:
        if sift is not None:
            sift.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cmd_soak(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.loadgen import LoadGenerator
    from benchmarks.soak import soak

    def progress(window: dict[str, Any]) -> None:
        print(
            f"window {window['window']}: p99 {window['latency_ms']['p99']:.3f} ms "
            f"(echo {window['echo_p99_ms']:.3f} ms), "
            f"RSS {window['rss_bytes'] >> 20} MiB, fds {window['open_fds']}, threads {window['threads']}",
            file=sys.stderr,
        )

    with one_sift(args, args.serve_arg) as run, LoadGenerator(args.processes) as gen:
        echo, echo_address = start_echo(capture_responses(run.address, run.payloads), run.workdir)
        try:
            measured = soak(
                gen,
                run.address,
                run.process.popen.pid,
                run.payloads,
                echo_address=echo_address,
                rate=args.rate,
                duration_s=args.duration,
                window_s=args.window,
                echo_window_s=args.echo_window,
                warmup_windows=args.warmup_windows,
                max_rss_growth=args.max_rss_growth,
                max_p99_drift=args.max_p99_drift,
                on_window=progress,
            )
        finally:
            echo.stop()
    limits = {"max_rss_growth": args.max_rss_growth, "max_p99_drift": args.max_p99_drift}
    return run.common | {"limits": limits, "soak": measured}


def cmd_drain(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.drain import drain_run

    serve_args = ["--drain-period", str(args.drain_period), "--grace-period", str(args.grace_period)]
    serve_args += args.serve_arg
    with one_sift(args, serve_args) as run:
        measured = drain_run(
            run.address,
            run.payloads,
            run.process.popen,
            run.process.log.read_text,
            rate=args.rate,
            sigterm_at_s=args.sigterm_at,
            seed=args.seed,
        )
        log_tail = run.process.log.read_text()[-1500:]
    return run.common | {"serve_args": serve_args, "drain": measured, "server_log_tail": log_tail}


def cmd_overload(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import overload as ov
    from benchmarks.loadgen import LoadGenerator

    args.workload, args.candidates, args.candidates_by = args.mix, args.heavy_candidates, "text"
    with one_sift(args, args.serve_arg) as run, LoadGenerator(args.processes) as gen:
        server = ov.Server(run.address, run.process.popen.pid, run.metrics_url)
        by_method: dict[str, list] = {}
        for path, body in run.payloads:
            by_method.setdefault(path.rsplit("/", 1)[-1], []).append((path, body))
        priority = {"client_priority": args.client_priority}
        quick = {"warmup_s": 0.5, "duration_s": args.duration / 2} | priority
        solo = {
            m: ov.run_case(gen, server, p, retry="none", concurrency=1, timeout_s=10, **quick)
            for m, p in sorted(by_method.items())
        }
        print(f"solo: {[(m, c['admitted_ms'][m]['p50']) for m, c in solo.items()]}", file=sys.stderr)
        spec = {"warmup_s": args.warmup, "duration_s": args.duration, "timeout_s": args.deadline} | priority
        # Capacity: the mix's calls served one after another, each at its solo latency.
        mix = parse_mix(args.mix)
        paths = {"intent": "ClassifyIntent", "search": "Search", "relevance": "ScoreRelevance"}
        seconds = sum(w * solo[paths[n]]["admitted_ms"][paths[n]]["p50"] / 1000 for n, w in mix.items())
        cap = round(1 / seconds, 1)
        print(f"capacity: {cap}/s", file=sys.stderr)
        ladder = []
        for multiple in args.multiples if "ladder" in args.cases else []:
            for retry in ("immediate", "pushback"):
                case = ov.run_case(gen, server, run.payloads, retry=retry, rate=multiple * cap, **spec)
                case |= {"label": f"{multiple:g}x, {retry}", "multiple": multiple}
                first = next((row for row in ladder if row["retry"] == retry), case)
                case["goodput_ratio"] = round(case["goodput_per_s"] / first["goodput_per_s"], 3)
                print(f"ladder {case['label']}: goodput {case['goodput_per_s']}/s", file=sys.stderr)
                ladder.append(case)
        heavy = by_method["ScoreRelevance"]
        flood = None
        if "flood" in args.cases:
            flood = ov.run_case(
                gen,
                server,
                heavy,
                retry="immediate",
                concurrency=args.flood_concurrency,
                warmup_s=args.warmup,
                duration_s=args.flood_duration,
                timeout_s=args.timeout,
                **priority,
            )
            print(f"flood: {flood['admitted_ms']} {flood['refusals_by_code']}", file=sys.stderr)
        hol = None
        if "hol" in args.cases:
            hol = _hol(args, gen, server, solo, by_method["ClassifyIntent"], heavy, spec, quick)
        # The server's own complaints (a refusal is counted, never logged): anything here needs a look.
        problems = [
            line[:2000]
            for line in run.process.log.read_text(errors="replace").splitlines()
            if '"level": "ERROR"' in line or "Traceback" in line
        ][-20:]
        for line in problems:
            print(f"server: {line}", file=sys.stderr)
    checks = ov.checks(flood, ladder, hol)
    return run.common | {
        "serve_args": args.serve_arg,
        "overload": {
            "cases": args.cases,
            "client_priority": args.client_priority,
            "deadline_s": args.deadline,
            "heavy_candidates": args.heavy_candidates,
            "capacity_per_s": cap,
            "solo": solo,
            "ladder": ladder,
            "flood": flood,
            "hol": hol,
            "checks": checks,
            "server_errors": problems,
        },
    }


def cmd_batch(args: argparse.Namespace) -> dict[str, Any]:
    """One sift-serve; every call at every batch size against the same queries as single calls."""
    from benchmarks.batch import measure

    workdir = Path(tempfile.mkdtemp(prefix="sift-bench-batch-"))
    sift = None
    try:
        sift, address, _ = start_sift(args.bundle, args.serve_arg, workdir)
        info = model_info(address)
        pool = synthetic_queries(args.distinct_queries, seed=args.seed)[0]
        queries = draw(pool, len(pool), "uniform", args.seed)
        rows = measure(
            address,
            queries,
            args.sizes,
            args.repeats,
            args.rounds,
            args.warmup_rounds,
            args.k,
            args.search_modes,
        )
    finally:
        if sift is not None:
            sift.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "environment": report.environment(),
        "bundle_version": info.bundle_version,
        "serve_args": args.serve_arg,
        "queries": f"{len(set(pool))} distinct synthetic catalogue queries, uniform",
        "spec": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "warmup_rounds": args.warmup_rounds,
            "k": args.k,
            "search_modes": args.search_modes,
        },
        "rows": rows,
    }


def _hol(
    args: argparse.Namespace,
    gen: Any,
    server: Any,
    solo: dict[str, Any],
    intent: list,
    heavy: list,
    spec: dict[str, Any],
    quick: dict[str, Any],
) -> dict[str, Any]:
    """ClassifyIntent open loop at a share of its capacity: alone, beside heavy relevance calls, and beside a
    control that takes the same CPU outside Sift."""
    from benchmarks import cpu_burner
    from benchmarks import overload as ov

    capacity = ov.run_case(gen, server, intent, retry="none", concurrency=16, timeout_s=10, **quick)
    intent_cap = capacity["goodput_per_s"]
    intent_rate = args.hol_load * intent_cap
    heavy_s = solo["ScoreRelevance"]["admitted_ms"]["ScoreRelevance"]["p50"] / 1000
    heavy_rate = args.hol_heavy_cpu / heavy_s
    # Superposed Poisson streams: the heavy calls' share of the payloads is their share of the rate.
    every = max(round(intent_rate / heavy_rate), 1)
    mixed = [heavy[i % len(heavy)] if i % every == 0 else p for i, p in enumerate(intent)]
    # Alone, beside the heavy calls and beside the control alternate, round after round: the machine's own
    # noise moves a p99 from one run to the next by as much as the heavy calls do, so each figure is the
    # median of the rounds' ratios. The control (benchmarks/cpu_burner.py) takes the heavy calls' CPU in
    # bursts of their length at their rate, outside Sift, under the heavy workers' SCHED_IDLE: what
    # background work of that CPU costs ClassifyIntent on this machine.
    pairs = []
    policy = "-"
    for n in range(args.hol_repeats):
        alone = ov.run_case(gen, server, intent, retry="none", rate=intent_rate, **spec)
        beside = ov.run_case(gen, server, mixed, retry="none", rate=intent_rate + heavy_rate, **spec)
        burner = cpu_burner.start(heavy_rate, heavy_s, spec["warmup_s"] + spec["duration_s"] + 1, seed=n)
        control = ov.run_case(gen, server, intent, retry="none", rate=intent_rate, **spec)
        policy = burner.communicate()[0].split()[0]
        p99 = alone["admitted_ms"]["ClassifyIntent"]["p99"]
        pairs.append(
            {
                "alone": alone,
                "beside": beside,
                "control": control,
                "p99_ratio": round(beside["admitted_ms"]["ClassifyIntent"]["p99"] / p99, 3),
                "control_ratio": round(control["admitted_ms"]["ClassifyIntent"]["p99"] / p99, 3),
            }
        )
    ratios = [pair["p99_ratio"] for pair in pairs]
    controls = [pair["control_ratio"] for pair in pairs]
    return {
        "load": args.hol_load,
        "heavy_cpu": args.hol_heavy_cpu,
        "intent_capacity": intent_cap,
        "intent_rate": round(intent_rate, 1),
        "heavy_rate": round(heavy_rate, 2),
        "pairs": pairs,
        "p99_ratio": round(statistics.median(ratios), 3),
        "p99_ratio_range": [min(ratios), max(ratios)],
        "control_policy": policy,
        "control_ratio": round(statistics.median(controls), 3),
        "control_ratio_range": [min(controls), max(controls)],
    }


def _intent_query(payload: bytes) -> str:
    from server._proto.sift.v1 import intent_pb2

    return intent_pb2.ClassifyIntentRequest.FromString(payload).query


def _versus(results: dict[str, Any], ours: str, theirs: str) -> list[dict[str, Any]]:
    """Per concurrency: our throughput and latency over the peer's, median of per-repeat ratios."""
    import statistics

    rows = []
    for level in results["closed"]:
        mine, peer_runs = level["by_target"][ours]["repeats"], level["by_target"][theirs]["repeats"]
        pairs = list(zip(mine, peer_runs, strict=True))
        row: dict[str, Any] = {"concurrency": level["level"]}
        row["qps_ratio"] = round(statistics.median(a["qps"] / b["qps"] for a, b in pairs if b["qps"]), 3)
        for key in ("p50", "p99"):
            values = [a["latency_ms"][key] / b["latency_ms"][key] for a, b in pairs]
            row[f"{key}_ratio"] = round(statistics.median(values), 3)
        rows.append(row)
    return rows


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Python's default for SIGTERM ends the process at once, so the servers the harness started (and their
    # heavy workers and the client processes) would outlive it. Stopped as Ctrl-C stops it, every `finally`
    # that stops them runs first.
    raise KeyboardInterrupt(f"sift-bench: signal {signum}")


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    if argv is None:  # the sift-bench command, not a caller's own process (a test's, say)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if given[:1] == ["ray-labelling"]:  # needs the train and scale extras: its own parser, imported late
        from benchmarks.ray_labelling import main as ray_labelling

        ray_labelling(given[1:])
        return
    parser = argparse.ArgumentParser(
        prog="sift-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="open/closed-loop load against the echo floor")
    add_target_args(load)
    add_workload_args(load)
    add_load_args(load)
    load.add_argument(
        "--output", type=Path, help="results directory (default benchmarks/results/load-<workload>)"
    )
    models = sub.add_parser("models", help="bundle models against their teachers, per call")
    models.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    models.add_argument("--threads", type=int, default=1, help="threads for every runtime")
    models.add_argument("--min-seconds", type=float, default=1.0, help="timing per row, at least")
    models.add_argument(
        "--cache", type=Path, default=Path(".cache/teachers-onnx"), help="teacher ONNX exports"
    )
    models.add_argument("--output", type=Path, default=RESULTS / "models")
    peer_cmd = sub.add_parser("peer", help="Sift against MLServer on the same ONNX intent model")
    peer_cmd.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    peer_cmd.add_argument("--serve-arg", action="append", default=[], help="a sift-serve flag")
    peer_cmd.add_argument("--venv", type=Path, default=Path(".venv-mlserver"), help="MLServer's own venv")
    add_workload_args(peer_cmd)
    add_load_args(peer_cmd)
    peer_cmd.set_defaults(concurrency=[1, 4, 16, 64])
    peer_cmd.add_argument("--output", type=Path, default=RESULTS / "peer")
    from benchmarks.scale import add_scale_parser, cmd_scale
    from benchmarks.transport_cost import add_parsers as add_transport_cost_parsers

    add_scale_parser(sub)
    add_transport_cost_parsers(sub)
    startup = sub.add_parser("startup", help="cold start to SERVING and the memory of one process")
    startup.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    startup.add_argument("--repeats", type=int, default=5)
    startup.add_argument("--serve-arg", action="append", default=[], help="a sift-serve flag")
    startup.add_argument("--output", type=Path, default=RESULTS / "startup")
    soak = sub.add_parser("soak", help="a long mixed open-loop run that fails on leaks or p99 drift")
    add_mixed_run_args(soak)
    soak.add_argument("--duration", type=float, default=600.0, help="seconds, warm-up included")
    soak.add_argument("--window", type=float, default=10.0, help="seconds per sample")
    soak.add_argument(
        "--echo-window",
        type=float,
        default=2.0,
        help="seconds on the echo floor per sample; give it ~1,000 calls (rate x seconds) for a steady p99",
    )
    soak.add_argument("--warmup-windows", type=int, default=3)
    soak.add_argument("--max-rss-growth", type=float, default=0.05)
    soak.add_argument("--max-p99-drift", type=float, default=0.20)
    soak.add_argument("--processes", type=int, default=2, help="client processes")
    drain = sub.add_parser("drain", help="SIGTERM under load: no call the server took may be lost")
    add_mixed_run_args(drain)
    drain.add_argument("--sigterm-at", type=float, default=3.0, help="seconds of load before SIGTERM")
    drain.add_argument("--drain-period", type=float, default=1.0, help="sift-serve --drain-period")
    drain.add_argument("--grace-period", type=float, default=5.0, help="sift-serve --grace-period")
    over = sub.add_parser("overload", help="1x-10x capacity and a retry flood, two kinds of client")
    over.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    over.add_argument("--serve-arg", action="append", default=[], help="a sift-serve flag")
    add_workload_args(over)
    over.add_argument(
        "--cases", type=lambda t: t.split(","), default=["ladder", "flood", "hol"], help="of ladder,flood,hol"
    )
    over.add_argument("--mix", default="intent=0.45,search=0.45,relevance=0.1", help="the ladder's calls")
    over.add_argument("--heavy-candidates", type=int, default=1000, help="titles per ScoreRelevance")
    over.add_argument("--multiples", type=_floats, default=[1, 2, 5, 10], help="of capacity")
    over.add_argument("--deadline", type=float, default=1.0, help="seconds per call in the ladder and hol")
    over.add_argument("--flood-concurrency", type=int, default=256)
    over.add_argument("--flood-duration", type=float, default=8.0)
    over.add_argument("--timeout", type=float, default=10.0, help="seconds per call in the flood")
    over.add_argument("--hol-load", type=float, default=0.5, help="of ClassifyIntent's capacity")
    over.add_argument("--hol-heavy-cpu", type=float, default=0.2, help="core share of the heavy calls")
    over.add_argument("--hol-repeats", type=int, default=5, help="rounds: alone, beside heavy, control")
    over.add_argument("--duration", type=float, default=4.0, help="measured seconds per case")
    over.add_argument("--warmup", type=float, default=1.0)
    over.add_argument("--processes", type=int, default=2, help="client processes")
    over.add_argument(
        "--client-priority",
        choices=["normal", "idle"],
        default="normal",
        help="the client processes' scheduling: idle (SCHED_IDLE) leaves every core the server wants to it",
    )
    over.add_argument("--seed", type=int, default=0)
    over.add_argument("--output", type=Path, default=RESULTS / "overload-admission")
    batch = sub.add_parser("batch", help="per-query cost of batch calls against the same single calls")
    batch.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    batch.add_argument("--serve-arg", action="append", default=[], help="a sift-serve flag")
    batch.add_argument("--sizes", type=_ints, default=[1, 8, 32], help="batch sizes")
    batch.add_argument("--repeats", type=int, default=5, help="blocks of rounds per call and size")
    batch.add_argument("--rounds", type=int, default=60, help="measured rounds per block")
    batch.add_argument("--warmup-rounds", type=int, default=5, help="rounds per block sent first")
    batch.add_argument("--k", type=int, default=10, help="Search k")
    batch.add_argument(
        "--search-modes",
        type=lambda t: [m.strip() for m in t.split(",")],
        default=["", "dense"],
        help="Search modes measured, comma-separated; empty = the bundle's default",
    )
    batch.add_argument("--distinct-queries", type=int, default=2000, help="synthetic queries to draw from")
    batch.add_argument("--seed", type=int, default=0)
    batch.add_argument("--output", type=Path, default=RESULTS / "batch")
    args = parser.parse_args(argv)

    if args.command == "batch":
        from benchmarks.batch import batch_markdown

        result = cmd_batch(args)
        markdown = batch_markdown(result, report.header(result, "sift-bench batch"))
        report.write_results(args.output, result, markdown)
        print(markdown, file=sys.stderr)
    if args.command == "overload":
        from benchmarks.overload import overload_markdown

        result = cmd_overload(args)
        markdown = overload_markdown(result, report.header(result, "sift-bench overload"))
        report.write_results(args.output, result, markdown)
        print(markdown, file=sys.stderr)

    if args.command == "drain":
        from benchmarks.drain import drain_markdown

        result = cmd_drain(args)
        markdown = drain_markdown(result, report.header(result, "sift-bench drain"))
        write_verdict(args, result, markdown, shown=markdown)
    if args.command == "soak":
        from benchmarks.soak import soak_markdown

        result = cmd_soak(args)
        markdown = soak_markdown(result, report.header(result, "sift-bench soak"))
        write_verdict(args, result, markdown, shown=markdown.split("| window")[0])
    if args.command == "scale":
        cmd_scale(args)
    if args.command in ("http", "tracing"):
        from benchmarks.transport_cost import run

        run(args)
    if args.command == "startup":
        from benchmarks.startup import measure_startup, startup_markdown

        workdir = Path(tempfile.mkdtemp(prefix="sift-bench-startup-"))
        try:
            measured = measure_startup(args.bundle, args.repeats, args.serve_arg, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result = {
            "environment": report.environment(),
            "bundle_version": model_version(args.bundle),
        } | measured
        markdown = startup_markdown(result, report.header(result, "sift-bench startup"))
        report.write_results(args.output, result, markdown)
        print(markdown, file=sys.stderr)
    if args.command == "peer":
        result = cmd_peer(args)
        write_load_results(args.output, result, extra=peer_markdown(result))
    if args.command == "models":
        from benchmarks.models import models_markdown, models_plot, run_models

        result = {"environment": report.environment()} | run_models(
            args.bundle, args.threads, args.min_seconds, args.cache
        )
        markdown = models_markdown(result, report.header(result, "sift-bench models"))
        report.write_results(args.output, result, markdown)
        models_plot(result, args.output)
        print(markdown, file=sys.stderr)
    if args.command == "load":
        result = cmd_load(args)
        name = args.workload.replace("=", "").replace(",", "-").replace(".", "")
        write_load_results(args.output or RESULTS / f"load-{name}", result)


def add_mixed_run_args(parser: argparse.ArgumentParser) -> None:
    """What soak and drain share: one sift-serve on a bundle, the mixed workload at an open-loop rate."""
    parser.add_argument("--bundle", type=Path, default=Path("bundles/default"))
    parser.add_argument("--serve-arg", action="append", default=[], help="a sift-serve flag")
    add_workload_args(parser, default="intent=0.6,search=0.3,relevance=0.1")
    parser.add_argument("--rate", type=float, default=500.0, help="arrivals per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / parser.prog.split()[-1])


def write_verdict(args: argparse.Namespace, result: dict[str, Any], markdown: str, shown: str) -> None:
    """A pass/fail command's output: its results, `shown` on stderr, and exit status 1 when it failed."""
    report.write_results(args.output, result, markdown)
    print(shown, file=sys.stderr)
    if not result[args.command]["passed"]:
        raise SystemExit(1)


def peer_markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "## Sift against MLServer",
        "",
        "Same bundle, same intent model and featurization (MLServer runs it in a custom runtime), same "
        "queries and load; Sift / MLServer, median of the per-repeat ratios.",
        "",
        "| in flight | throughput ratio | p50 ratio | p99 ratio |",
        "|---:|---:|---:|---:|",
    ]
    for row in result["versus_peer"]:
        lines.append(
            f"| {row['concurrency']:g} | {row['qps_ratio']:.2f}x | {row['p50_ratio']:.2f}x "
            f"| {row['p99_ratio']:.2f}x |"
        )
    return [*lines, ""]


def write_load_results(out: Path, result: dict[str, Any], extra: list[str] | None = None) -> None:
    markdown = report.load_markdown(result)
    if extra:
        head, sep, rest = markdown.partition("## ")
        markdown = head + "\n".join(extra) + "\n" + sep + rest
    report.write_results(out, result, markdown)
    report.load_plots(result, out)
    print(markdown.split("## Closed")[0], file=sys.stderr)
    print(f"sift-bench: wrote {out}/README.md, results.json and plots", file=sys.stderr)


if __name__ == "__main__":
    main()
