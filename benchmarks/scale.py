"""`sift-bench scale`: one replica at 10k, 100k and 1M products.

For each size, from a real bundle grown as benchmarks/scale_catalogue.py describes (cached outside the
repository, since a million products' index takes many minutes to build):
- build: index seconds (usearch, training's settings), product side seconds (arrays, lexicon, BM25), bytes;
- update: `sift-train update` adding 1% new products, embedded by the bundle's real product teacher;
- cold start to SERVING, and RssAnon (private) and RssFile (mapped) of one worker and of `--workers 2`;
- p50/p99 at one call in flight of ClassifyIntent, Search (dense, and the bundle's default mode), Search
  filtered to a 1% and to the 40% category, ScoreRelevance of 100 product ids;
- recall@10 of Search (unfiltered and both filters) against exact search over the same vectors.

Sizes may be run one at a time (`--sizes 1000000`): each run merges its sizes into the results.json of
`--output` and rewrites the table and plots from every size there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.scale_catalogue import BIG_SHARE, KINDS, Grown, cache_name, cached
from benchmarks.servers import (
    Process,
    descendants,
    free_port,
    proc_status,
    wait_heavy_workers,
    wait_serving,
)
from training.metrics import bootstrap_ci

RESULTS = Path("benchmarks/results/scale")
CALLS = 300  # timed calls per kind, after WARMUP
WARMUP = 30
RECALL_QUERIES = 500
TIE = 0.005
"""A served hit within this of the exact 10th score counts for recall@10 within TIE: on the 1M grown
catalogue the exact top 10 span about 0.02 and its 10th and 11th differ by 0.0005 (copies of one product)."""
MIB = 1 << 20


def add_scale_parser(sub: Any) -> None:
    p = sub.add_parser(
        "scale", help="one replica at 10k, 100k and 1M products: build, update, memory, latency"
    )
    p.add_argument("--base", type=Path, default=Path("bundles/default"), help="the real bundle to grow")
    p.add_argument("--sizes", default="10000,100000,1000000", help="product counts, comma separated")
    p.add_argument("--cache", type=Path, default=Path("/work/scale-cache"), help="grown catalogues, bundles")
    p.add_argument("--update-share", type=float, default=0.01, help="products added by the timed update")
    p.add_argument("--no-update", action="store_true", help="skip the update (and its teacher)")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument(
        "--grow",
        choices=KINDS,
        default="copies",
        help="grow the catalogue with noisy copies of the real products (clusters of near-ties) or noisy "
        "mixes of two (spread as real products are); use another --output for each",
    )
    p.add_argument(
        "--graph-check",
        type=int,
        metavar="N",
        help="instead: recall of the HNSW graph at N products over clustered copies against mixes "
        "(benchmarks/scale_graph.py), written to OUTPUT/graph",
    )
    p.add_argument("--connectivity", default="16,32", help="--graph-check's usearch connectivities")
    p.add_argument(
        "--graph-kinds", type=_kinds, default=KINDS, help=f"--graph-check's catalogues: {', '.join(KINDS)}"
    )


def _kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(k for k in value.split(",") if k)
    if unknown := [k for k in kinds if k not in KINDS]:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: not one of {', '.join(KINDS)}")
    return kinds


def cmd_scale(args: argparse.Namespace) -> None:
    if args.graph_check:
        from benchmarks.scale_graph import graph_check, graph_markdown

        result = {"environment": report.environment()}
        connectivities = [int(c) for c in args.connectivity.split(",")]
        result |= graph_check(args.base, args.graph_check, connectivities, args.graph_kinds)
        markdown = graph_markdown(result, report.header(result, "sift-bench scale --graph-check"))
        report.write_results(args.output / "graph", result, markdown)
        print(markdown, file=sys.stderr)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.output / "results.json"
    result = json.loads(path.read_text()) if path.is_file() else {"sizes": {}}
    result["environment"] = report.environment()
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        print(f"scale: {n:,} products", file=sys.stderr)
        result["sizes"][str(n)] = measure_size(
            args.base, n, args.cache, args.update_share, not args.no_update, args.grow
        )
        args.output.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    markdown = scale_markdown(result, report.header(result, "sift-bench scale"))
    report.write_results(args.output, result, markdown)
    scale_plot(result, args.output)
    print(markdown, file=sys.stderr)


def build_bundle(base: Path, grown: Grown, index_file: Path, out: Path) -> dict[str, float]:
    """A schema 3 bundle of the grown catalogue: the base's models, rules and settings, the grown index
    (hard-linked from the cache), product arrays and BM25 index. Returns the seconds of each part."""
    from server.catalogue import product_arrays, save_product_arrays
    from server.featurize import Featurizer, FeaturizerConfig
    from server.manifest import Manifest, files_of
    from server.runtime.lexical import build_lexical_index, impact_name, save
    from training.relevance_bags import write_updated_bags

    old = Manifest.read(base)
    spec, lexical = old.components.index, old.components.lexical
    assert spec is not None
    work = Path(tempfile.mkdtemp(prefix=".scale-", dir=out.parent))
    skip = {spec.file, spec.products, *(a.file for a in (spec.arrays or {}).values())}
    if old.components.relevance is not None and old.components.relevance.title_bags is not None:
        skip.add(old.components.relevance.title_bags.file)
    skip |= set(lexical.files()) if lexical else set()
    if lexical is not None:  # the impact order too, which bundles before it lack
        skip.add(impact_name(lexical.vocabulary.removesuffix("_vocab.json")))
    for name in old.files:
        if name not in skip:
            shutil.copy2(base / name, work / name)
    os.link(index_file, work / spec.file)
    featurizer = Featurizer(
        base / old.featurizer.tokenizer, FeaturizerConfig.from_json(old.featurizer.config)
    )
    start = time.perf_counter()
    vectors = lambda rows: grown.vectors[rows]  # noqa: E731
    catalogue = product_arrays(
        grown.ids, grown.titles, grown.categories, len(old.labels), featurizer, vectors
    )
    arrays = save_product_arrays(work, catalogue, work / spec.file)
    seconds = {"product_arrays": time.perf_counter() - start}
    relevance = old.components.relevance
    if relevance is not None and relevance.title_bags is not None:  # text_bags: every product's title bag
        start = time.perf_counter()
        everyone = np.full(len(grown.ids), -1, dtype=np.int64)
        relevance = write_updated_bags(
            base, relevance, work, everyone, catalogue, featurizer.config.num_buckets
        )
        seconds["title_bags"] = time.perf_counter() - start
    if lexical is not None:
        start = time.perf_counter()
        save(
            work,
            build_lexical_index(grown.titles, lexical.k1, lexical.b),
            lexical.vocabulary[: -len("_vocab.json")],
        )
        seconds["bm25"] = time.perf_counter() - start
    start = time.perf_counter()
    files = files_of(work)
    seconds["hash"] = time.perf_counter() - start
    now = datetime.now(UTC)
    manifest = replace(
        old,
        bundle_version=f"scale{len(grown.ids)}-{now:%Y%m%dT%H%M%SZ}",
        files=files,
        components=replace(
            old.components,
            index=replace(spec, products=None, arrays=arrays, count=len(grown.ids)),
            relevance=relevance,
        ),
        training={**old.training, "scale": f"grown from {old.bundle_version} by sift-bench scale"},
        schema_version=3,
    )
    manifest.write(work)
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return {k: round(v, 1) for k, v in seconds.items()}


def update_file(base: Path, grown: Grown, count: int, path: Path, seed: int = 1) -> None:
    """`count` new products as a catalogue file: real titles of the base with a new model code, in the
    categories of their source products."""
    from server.manifest import Manifest

    labels = Manifest.read(base).labels
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(grown.ids), count)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "category"])
        for i, s in enumerate(source.tolist()):
            w.writerow([f"U{i:08d}", f"{grown.titles[s]} u{i:05d}", labels[int(grown.categories[s])].path])


def serve(bundle: Path, workdir: Path, *extra: str) -> tuple[Process, str, float, float]:
    """A server on `bundle`: (process, target, seconds to SERVING, seconds more until its heavy workers
    hold the bundle). Everything measured after this runs against the served steady state."""
    port, metrics_port = free_port(), free_port()
    args = [sys.executable, "-m", "server", "--bundle", str(bundle), "--port", str(port)]
    args += ["--metrics-port", str(metrics_port), "--drain-period", "0", *extra]
    start = time.monotonic()
    process = Process(args, workdir / f"serve-{port}.log")
    target = f"127.0.0.1:{port}"
    wait_serving(target, timeout_s=600, process=process.popen, poll_s=0.005)
    serving = time.monotonic() - start
    heavy = wait_heavy_workers(f"http://127.0.0.1:{metrics_port}/metrics", args, process.popen, 600)
    return process, target, serving, heavy


def _memory(pid: int) -> dict[str, int]:
    status = proc_status(pid)
    return {"RssAnon": status["RssAnon"], "RssFile": status["RssFile"]}


def startup(bundle: Path, workdir: Path, repeats: int = 3) -> dict[str, Any]:
    """Cold start (to SERVING, and on to the heavy workers' load) and private memory once both are done:
    of the serving process, of the processes below it (its heavy worker holds the bundle too), and with
    `--workers 2` of the whole tree."""
    runs = []
    for _ in range(repeats):
        process, _, seconds, heavy = serve(bundle, workdir)
        try:
            below = [_memory(pid) for pid in descendants(process.popen.pid)]
            runs.append(
                {
                    "seconds": round(seconds, 3),
                    "heavy_ready_s": round(heavy, 3),
                    **_memory(process.popen.pid),
                    "below_rss_anon": sum(m["RssAnon"] for m in below),
                }
            )
        finally:
            process.stop()
    process, _, seconds, _ = serve(bundle, workdir, "--workers", "2")
    try:
        tree = [_memory(pid) for pid in descendants(process.popen.pid)]
        supervisor = _memory(process.popen.pid)
    finally:
        process.stop()
    return {
        "cold_start_s": statistics.median(r["seconds"] for r in runs),
        "heavy_ready_s": statistics.median(r["heavy_ready_s"] for r in runs),
        "rss_anon": statistics.median(r["RssAnon"] for r in runs),
        "rss_anon_below": statistics.median(r["below_rss_anon"] for r in runs),
        "rss_file": statistics.median(r["RssFile"] for r in runs),
        "runs": runs,
        "two_workers": {
            "cold_start_s": round(seconds, 3),
            "processes": tree,
            "supervisor": supervisor,
            "rss_anon_total": sum(w["RssAnon"] for w in tree) + supervisor["RssAnon"],
        },
    }


def reload_under_load(old: Path, new: Path, workdir: Path, threads: int = 2) -> dict[str, Any]:
    """A server on `old` under closed-loop Search and ClassifyIntent load reloads `new` (AdminService
    ReloadBundle); every call's outcome is counted."""
    import threading

    import grpc

    from server._proto.sift.v1 import (
        admin_pb2,
        admin_pb2_grpc,
        intent_pb2,
        intent_pb2_grpc,
        retrieval_pb2,
        retrieval_pb2_grpc,
    )

    process, target, _, _ = serve(old, workdir)
    outcomes: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def run() -> None:
        with grpc.insecure_channel(target) as channel:
            intent = intent_pb2_grpc.IntentServiceStub(channel)
            retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            while not stop.is_set():
                try:
                    a = intent.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query="oak table"), timeout=10)
                    b = retrieval.Search(retrieval_pb2.SearchRequest(query="oak table", k=10), timeout=10)
                    outcomes.extend(["OK", "OK"])
                    versions.update((a.model_version, b.model_version))
                except grpc.RpcError as e:
                    outcomes.append(e.code().name)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    try:
        for t in workers:
            t.start()
        time.sleep(1.0)
        start = time.perf_counter()
        with grpc.insecure_channel(target) as channel:
            reply = admin_pb2_grpc.AdminServiceStub(channel).ReloadBundle(
                admin_pb2.ReloadBundleRequest(path=str(new)), timeout=600
            )
        seconds = time.perf_counter() - start
        time.sleep(1.0)
    finally:
        stop.set()
        for t in workers:
            t.join()
        process.stop()
    return {
        "calls": len(outcomes),
        "failed": sum(o != "OK" for o in outcomes),
        "reload_s": round(seconds, 2),
        "new_version": reply.bundle_version,
        "versions_answered": sorted(versions),
    }


def _queries(grown: Grown, count: int, seed: int = 2) -> list[str]:
    """Title substrings of random products: two to four words of the title."""
    rng = np.random.default_rng(seed)
    out = []
    for row in rng.integers(0, len(grown.ids), count).tolist():
        words = grown.titles[row].replace(",", " ").split()
        size = int(rng.integers(2, 5))
        start = int(rng.integers(0, max(1, len(words) - size + 1)))
        out.append(" ".join(words[start : start + size]))
    return out


def _opt(row: dict[str, Any], key: str, unit: float, fmt: str) -> str:
    """A figure that runs before it was measured lack: "-"."""
    return format(row[key] / unit, fmt) if key in row else "-"


def _pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2] * 1e3, 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3),
    }


def latencies(target: str, bundle: Path, grown: Grown, labels: list[str], small: int) -> dict[str, Any]:
    """p50/p99 of each call at one in flight, and recall@10 of Search against exact search."""
    import grpc

    from server._proto.sift.v1 import (
        intent_pb2,
        intent_pb2_grpc,
        relevance_pb2,
        relevance_pb2_grpc,
        retrieval_pb2,
        retrieval_pb2_grpc,
    )

    DENSE = retrieval_pb2.SEARCH_MODE_DENSE
    texts = _queries(grown, max(CALLS + WARMUP, RECALL_QUERIES))
    queries = texts[: CALLS + WARMUP]
    rng = np.random.default_rng(3)
    big = labels[grown.big]
    calls: dict[str, Any] = {}
    with grpc.insecure_channel(target) as channel:
        intent = intent_pb2_grpc.IntentServiceStub(channel)
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        relevance = relevance_pb2_grpc.RelevanceServiceStub(channel)
        kinds = {
            "ClassifyIntent": lambda q: intent.ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query=q, top_k=5)
            ),
            "Search dense": lambda q: retrieval.Search(
                retrieval_pb2.SearchRequest(query=q, k=10, mode=DENSE)
            ),
            "Search default mode": lambda q: retrieval.Search(retrieval_pb2.SearchRequest(query=q, k=10)),
            "Search dense, 1% category": lambda q: retrieval.Search(
                retrieval_pb2.SearchRequest(query=q, k=10, mode=DENSE, category=labels[small])
            ),
            "Search dense, 40% category": lambda q: retrieval.Search(
                retrieval_pb2.SearchRequest(query=q, k=10, mode=DENSE, category=big)
            ),
        }
        ids = [grown.ids[i] for i in rng.integers(0, len(grown.ids), 100 * (CALLS + WARMUP)).tolist()]
        candidates = [
            [relevance_pb2.Candidate(product_id=pid) for pid in ids[i * 100 : (i + 1) * 100]]
            for i in range(CALLS + WARMUP)
        ]
        for name, call in kinds.items():
            took = []
            for i, q in enumerate(queries):
                start = time.perf_counter()
                call(q)
                if i >= WARMUP:
                    took.append(time.perf_counter() - start)
            calls[name] = _pct(took)
        took = []
        for i, q in enumerate(queries):
            request = relevance_pb2.ScoreRelevanceRequest(query=q, candidates=candidates[i])
            start = time.perf_counter()
            relevance.ScoreRelevance(request)
            if i >= WARMUP:
                took.append(time.perf_counter() - start)
        calls["ScoreRelevance 100 ids"] = _pct(took)

        # Recall@10: the served Search of the query's vector against exact search over the same vectors.
        vectors = [
            np.array(retrieval.EmbedQuery(retrieval_pb2.EmbedQueryRequest(query=q)).vector, dtype=np.float32)
            for q in texts[:RECALL_QUERIES]
        ]
        recall, recall_ci, ties, spread = {}, {}, {}, {}
        row_of = {pid: i for i, pid in enumerate(grown.ids)}
        for name, label in (("all", None), ("1% category", small), ("40% category", grown.big)):
            served = []
            for v in vectors:
                category = labels[label] if label is not None else ""
                request = retrieval_pb2.SearchRequest(
                    vector=retrieval_pb2.QueryVector(values=v.tolist()), k=10, category=category
                )
                served.append([row_of[h.product_id] for h in retrieval.Search(request).hits])
            rows, scores = exact_scores(grown, np.stack(vectors), label)
            top = np.sort(-np.partition(-scores, 10, axis=1)[:, :11], axis=1)[:, ::-1]
            tenth = top[:, 9]
            hits = [scores[i, np.searchsorted(rows, s)] - tenth[i] for i, s in enumerate(served)]
            found = np.array([np.sum(h >= -1e-6) / 10 for h in hits])
            recall[name] = round(float(found.mean()), 4)
            recall_ci[name] = [round(x, 4) for x in bootstrap_ci(np.mean, found)]
            ties[name] = round(float(np.mean([np.sum(h >= -TIE) / 10 for h in hits])), 4)
            spread[name] = round(float(np.median(top[:, 0] - top[:, 9])), 4)
    return {
        "calls": calls,
        "recall_at_10": recall,
        "recall_queries": len(vectors),
        "recall_at_10_ci95": recall_ci,
        "recall_at_10_ties": ties,
        "exact_top10_spread": spread,
    }


def exact_scores(grown: Grown, queries: np.ndarray, label: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of every product or one category's (sorted), and each query's best-view cosine to each."""
    rows = np.arange(len(grown.ids)) if label is None else np.flatnonzero(grown.categories == label)
    best = np.full((len(queries), len(rows)), -np.inf, dtype=np.float32)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for start in range(0, len(rows), 65536):
        part = np.asarray(grown.vectors[rows[start : start + 65536]], dtype=np.float32)
        scores = (part.reshape(-1, part.shape[-1]) @ q.T).reshape(len(part), -1, len(q)).max(axis=1)
        best[:, start : start + len(part)] = scores.T
    return rows, best


def measure_size(
    base: Path, n: int, cache: Path, update_share: float, update: bool, kind: str = "copies"
) -> dict[str, Any]:
    from server.manifest import Manifest
    from training.catalogue_update import update_bundle

    grown, index_file, index_seconds = cached(base, n, cache, kind=kind)
    name = f"bundle-{cache_name(n, kind)}"
    bundle = cache / name
    build_json = cache / f"{name}.build.json"
    if not (bundle / "manifest.json").is_file() or not build_json.is_file():
        build = build_bundle(base, grown, index_file, bundle)
        build_json.write_text(json.dumps(build))
    build = json.loads(build_json.read_text())
    labels = [label.id for label in Manifest.read(bundle).labels]
    counts = np.bincount(grown.categories, minlength=len(labels))
    small = int(np.argmin(np.abs(counts / n - 0.01) + (counts == 0)))  # the category nearest 1%
    out: dict[str, Any] = {
        "products": n,
        "catalogue": kind,
        "index_build_s": index_seconds,
        "product_side_build_s": build,
        "bundle_bytes": sum(f.stat().st_size for f in bundle.iterdir()),
        "index_bytes": index_file.stat().st_size,
        "categories": {
            "1%": {"id": labels[small], "share": round(float(counts[small] / n), 4)},
            "40%": {"id": labels[grown.big], "share": round(float(counts[grown.big] / n), 4)},
        },
    }
    start = time.perf_counter()
    Manifest.read(bundle).verify_files(bundle)  # what every start checks (page cache warm, all cores)
    out["verify_files_s"] = round(time.perf_counter() - start, 3)
    workdir = Path(tempfile.mkdtemp(prefix="sift-bench-scale-"))
    try:
        out["startup"] = startup(bundle, workdir)
        process, target, _, _ = serve(bundle, workdir)
        try:
            out |= latencies(target, bundle, grown, labels, small)
        finally:
            process.stop()
        if update:
            data = workdir / "update.csv"
            added = max(1, int(n * update_share))
            update_file(base, grown, added, data)
            start = time.perf_counter()
            result = update_bundle(bundle, cache / f"{name}-updated", data)
            out["update"] = {
                "added": added,
                "seconds": round(time.perf_counter() - start, 1),
                "stages": result.seconds,
                "bundle_bytes": sum(f.stat().st_size for f in (cache / f"{name}-updated").iterdir()),
                "reload_under_load": reload_under_load(bundle, cache / f"{name}-updated", workdir),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def scale_markdown(result: dict[str, Any], head: list[str]) -> str:
    sizes = sorted(result["sizes"].values(), key=lambda s: s["products"])
    calls = list(sizes[0]["calls"]) if sizes else []
    grown = (
        "noisy mixes of two of their real teacher vectors"
        if sizes and sizes[0].get("catalogue") == "mixes"
        else "noisy copies of their real teacher vectors"
    )
    lines = [
        *head,
        f"Each catalogue is a real bundle's products grown with {grown} "
        f"({BIG_SHARE:.0%} of the products in one category); its index is built with training's usearch "
        "settings. Latency at one call in flight, from a client on the same machine. Cold start is to "
        "SERVING; the heavy workers finish loading after it (the next column), and memory is read from /proc "
        "once they have: RssAnon is private memory of the serving process and, apart, of the processes below "
        "it (its heavy worker holds the bundle too), RssFile mapped files (the index and product arrays, "
        "shared by all of them through the page cache); the 2-worker total counts every process.",
        "",
        "| products | index build s | product side s | bundle MiB | files checked s | cold start s "
        "| heavy workers ready s more | RssAnon MiB | heavy worker RssAnon MiB | RssFile MiB "
        "| 2 workers RssAnon MiB | update s (added) | reload under load: calls, failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        st, up = s["startup"], s.get("update")
        side = sum(s["product_side_build_s"].values())
        updated = f"{up['seconds']:.0f} ({up['added']:,})" if up else "-"
        reload = up.get("reload_under_load") if up else None
        reloaded = f"{reload['calls']:,}, {reload['failed']}" if reload else "-"
        lines.append(
            f"| {s['products']:,} | {s['index_build_s']:.0f} | {side:.1f} | {s['bundle_bytes'] / MIB:,.0f} "
            f"| {s['verify_files_s']:.2f} | {st['cold_start_s']:.2f} | {_opt(st, 'heavy_ready_s', 1, '.2f')} "
            f"| {st['rss_anon'] / MIB:.0f} | {_opt(st, 'rss_anon_below', MIB, '.0f')} "
            f"| {st['rss_file'] / MIB:,.0f} "
            f"| {st['two_workers']['rss_anon_total'] / MIB:.0f} "
            f"| {updated} | {reloaded} |"
        )
    lines += ["", "p50 / p99 ms:", "", "| products | " + " | ".join(calls) + " |"]
    lines.append("|---:|" + "---:|" * len(calls))
    for s in sizes:
        cells = [f"{s['calls'][c]['p50']:.2f} / {s['calls'][c]['p99']:.2f}" for c in calls]
        lines.append(f"| {s['products']:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Recall@10 of Search against exact search over the same vectors{_over_queries(sizes)} (95% "
        "bootstrap interval over the queries, where measured); in brackets counting a hit within "
        f"{TIE} of the exact 10th score (near-ties), and the median spread of the exact top 10's scores:",
        "",
    ]
    lines += ["| products | all | 1% category (share) | 40% category (share) |", "|---:|---:|---:|---:|"]

    def cell(s: dict[str, Any], name: str) -> str:
        if "recall_at_10_ties" not in s:  # sizes measured before near-ties were
            return f"{s['recall_at_10'][name]:.3f}"
        r, t, w = s["recall_at_10"], s["recall_at_10_ties"], s["exact_top10_spread"]
        ci = s.get("recall_at_10_ci95", {}).get(name)  # sizes measured before intervals were: none
        interval = f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        return f"{r[name]:.3f}{interval} ({t[name]:.3f}; {w[name]:.3f})"

    for s in sizes:
        c = s["categories"]
        lines.append(
            f"| {s['products']:,} | {cell(s, 'all')} | {cell(s, '1% category')} ({c['1%']['share']:.2%}) "
            f"| {cell(s, '40% category')} ({c['40%']['share']:.2%}) |"
        )
    lines.append("")
    return "\n".join(lines)


def _over_queries(sizes: list[dict[str, Any]]) -> str:
    """The recall table's ", over N queries" when every size recorded the same N (runs before it did not
    record it), else nothing."""
    counts = {s.get("recall_queries") for s in sizes}
    return f", over {counts.pop()} queries" if len(counts) == 1 and None not in counts else ""


def scale_plot(result: dict[str, Any], directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(result["sizes"].values(), key=lambda s: s["products"])
    if not sizes:
        return
    x = [s["products"] for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for call in sizes[0]["calls"]:
        left.plot(x, [s["calls"][call]["p50"] for s in sizes], marker="o", label=call)
    left.set(
        xscale="log", xlabel="products", ylabel="p50 ms (1 in flight)", title="latency against catalogue size"
    )
    left.legend(fontsize=7)
    right.plot(
        x, [s["startup"]["cold_start_s"] for s in sizes], marker="o", color="black", label="cold start s"
    )
    right.set(xscale="log", xlabel="products", ylabel="seconds to SERVING")
    twin = right.twinx()
    twin.plot(x, [s["startup"]["rss_anon"] / MIB for s in sizes], marker="s", label="RssAnon MiB")
    twin.plot(x, [s["startup"]["rss_file"] / MIB for s in sizes], marker="^", label="RssFile MiB")
    twin.set(ylabel="MiB, one worker")
    right.legend(loc="upper left", fontsize=7)
    twin.legend(loc="lower right", fontsize=7)
    right.set_title("cold start and memory")
    fig.tight_layout()
    fig.savefig(directory / "scale.png", dpi=110)
    plt.close(fig)
