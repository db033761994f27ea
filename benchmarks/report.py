"""Writes a benchmark's results: JSON with every raw figure, a Markdown table, and PNG plots.

Every output carries the command line, the bundle version, the machine and the package versions.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.histogram import LatencyHistogram

PACKAGES = (
    "grpcio",
    "protobuf",
    "onnxruntime",
    "numpy",
    "tokenizers",
    "usearch",
    "prometheus-client",
    "uvloop",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version() -> str:
    """The git commit of the checkout that ran the benchmark (with -dirty for uncommitted changes)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "command": shlex.join(["sift-bench", *sys.argv[1:]]),
        "code_version": code_version(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
        },
        "packages": versions,
    }


def header(result: dict[str, Any], title: str) -> list[str]:
    env = result["environment"]
    machine = env["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    return [
        f"# {title}",
        "",
        f"Command: `{env['command']}` (code {env.get('code_version', 'unknown')})  ",
        f"Bundle `{result.get('bundle_version', '-')}`; {machine['cores']} cores, {machine['cpu']}, "
        f"{machine['system']}, Python {machine['python']}; {env['time']}.  ",
        f"Packages: {packages}.",
        "",
    ]


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"


def _spread(stat: dict[str, float], digits: int = 3) -> str:
    return f"{_fmt(stat['median'], digits)} ({_fmt(stat['min'], digits)}-{_fmt(stat['max'], digits)})"


def load_markdown(result: dict[str, Any]) -> str:
    spec = result["spec"]
    floor, main = result["targets"][0], result["targets"][-1]
    lines = header(result, f"sift-bench load: {result['workload']}")
    lines += [
        f"Workload `{result['workload']}` ({result['calls_description']}); {spec['repeats']} repeats of "
        f"{spec['warmup_s']:g} s warm-up (excluded) + {spec['duration_s']:g} s measured per level; "
        f"{result['processes']} client processes. Figures are medians over repeats with (min-max); ratios "
        f"are each server / {floor} within each repeat, then the median. Latency in ms.",
        "",
    ]
    knees = result["results"]["knee"]
    if knees:
        lines += [f"Knee (highest throughput with p99 <= {spec['p99_budget_ms']:g} ms):", ""]
        for name, k in knees.items():
            lines.append(
                f"- {name}: "
                + (
                    f"{k['qps']:,.0f} QPS at {k['concurrency']:g} in flight, p99 {k['p99_ms']:.3f} ms"
                    if k
                    else "no level within budget"
                )
            )
        lines.append("")
    for mode, title, unit in (("closed", "Closed loop", "in flight"), ("open", "Open loop", "offered /s")):
        levels = result["results"][mode]
        if not levels:
            continue
        lines += [
            f"## {title}",
            "",
            f"| {unit} | server | QPS | p50 | p90 | p99 | p99.9 | max | QPS ratio | p50 ratio | p99 ratio "
            "| p99.9 ratio | errors |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for level in levels:
            for name in result["targets"]:
                s = level["by_target"][name]["median"]
                r = level["by_target"][name].get("ratio_to_floor", {})
                errors = {c: n for c, n in s["codes"].items() if c != "OK"}
                lat = s["latency_ms"]
                cells = [
                    f"{level['level']:g}",
                    name,
                    _spread(s["qps"], 0),
                    _spread(lat["p50"]),
                    _fmt(lat["p90"]["median"]),
                    _spread(lat["p99"]),
                    _fmt(lat["p99.9"]["median"]),
                    _fmt(lat["max"]["median"]),
                    *(_ratio(r, key) for key in ("qps", "p50", "p99", "p99.9")),
                    str(errors or "-"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if mode == "open":
            lines += _send_checks(levels, main)
    lines += _by_method(result)
    lines += _variants(result)
    lines += _breakdown(result["results"], result["targets"])
    lines += _client_cpu(result["results"], result["targets"])
    lines += [
        "",
        "![latency CDF](latency_cdf.png)",
        "",
        "![throughput against concurrency](throughput_vs_concurrency.png)",
        "",
        "![latency against offered load](latency_vs_load.png)",
        "",
    ]
    return "\n".join(lines)


def _by_method(result: dict[str, Any]) -> list[str]:
    """For a mixed workload: each call's own latency, median over repeats, at every level."""
    floor = result["targets"][0]
    rows = []
    for mode in ("closed", "open"):
        for level in result["results"][mode]:
            for name in result["targets"][1:]:
                runs = level["by_target"][name]["repeats"]
                methods = sorted(runs[0]["by_method_ms"])
                if len(methods) < 2:
                    return []
                for method in methods:
                    p50 = statistics.median(r["by_method_ms"][method]["p50"] for r in runs)
                    p99 = statistics.median(r["by_method_ms"][method]["p99"] for r in runs)
                    rows.append(
                        f"| {mode} | {level['level']:g} | {name} | {method} | {p50:.3f} | {p99:.3f} |"
                    )
    if not rows:
        return []
    return [
        "## Latency by call",
        "",
        f"Each call of the mix on its own, median over repeats (ms); the floor ({floor}) answers every call "
        "alike, so compare calls with each other here.",
        "",
        "| mode | level | server | call | p50 | p99 |",
        "|---|---:|---|---|---:|---:|",
        *rows,
        "",
    ]


def _variants(result: dict[str, Any]) -> list[str]:
    """Each variant against the first (the baseline), level by level: the median of per-repeat ratios,
    so every lever is measured before and after in the same run."""
    names = list(result.get("variants") or {})
    if len(names) < 2:
        return []
    base = names[0]
    lines = [
        "## Levers: each variant against the baseline",
        "",
        f"Baseline `{base}`: `{result['variants'][base] or '(defaults)'}`. Ratios are variant / baseline "
        "within each repeat, then the median (below 1 is faster for latency; above 1 is more throughput).",
        "",
        "| variant | sift-serve flags | mode | level | QPS | p50 ms | p99 ms | QPS ratio | p50 ratio "
        "| p99 ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("closed", "open"):
        for level in result["results"][mode]:
            baseline = level["by_target"][base]["repeats"]
            for name in names:
                runs = level["by_target"][name]["repeats"]
                med = level["by_target"][name]["median"]
                pairs = list(zip(runs, baseline, strict=True))

                def ratio(get: Any, pairs: list = pairs) -> str:
                    values = sorted(get(a) / get(b) for a, b in pairs if get(b))
                    return f"{values[len(values) // 2]:.2f}x" if values else "-"

                lat = med["latency_ms"]
                lines.append(
                    f"| {name} | `{result['variants'][name] or '-'}` | {mode} | {level['level']:g} "
                    f"| {med['qps']['median']:,.0f} | {lat['p50']['median']:.3f} "
                    f"| {lat['p99']['median']:.3f} "
                    f"| {ratio(lambda r: r['qps'])} | {ratio(lambda r: r['latency_ms']['p50'])} "
                    f"| {ratio(lambda r: r['latency_ms']['p99'])} |"
                )
    return [*lines, ""]


def _ratio(ratios: dict[str, Any], key: str) -> str:
    return f"{ratios[key]['median']:.2f}x" if key in ratios else "-"


def _send_checks(levels: list[dict[str, Any]], main: str) -> list[str]:
    out = ["Open-loop client check (did the client send at the rate it claims?):", ""]
    for level in levels:
        checks = [run["send_check"] for run in level["by_target"][main]["repeats"]]
        bad = [c["message"] for c in checks if not c["ok"]]
        lag = max(c["send_lag_ms"].get("p99", 0.0) for c in checks)
        out.append(
            f"- {level['level']:g}/s: achieved {checks[0]['achieved_send_rate']:,.0f}/s, send lag p99 <= "
            f"{lag:.2f} ms: " + ("; ".join(bad) if bad else "kept its schedule")
        )
    return [*out, ""]


def _short(key: str) -> str:
    """sift_inference_duration_seconds{model=intent} -> inference ms: intent"""
    name, _, labels = key.partition("{")
    name = name.removeprefix("sift_").removesuffix("_seconds").removesuffix("_duration")
    value = labels.rstrip("}").partition("=")[2]
    unit = " ms" if key.split("{")[0].endswith("_seconds") else ""
    return f"{name}{unit}: {value}" if value else f"{name}{unit}"


def _breakdown(results: dict[str, Any], targets: list[str]) -> list[str]:
    table: dict[tuple[str, float, str], dict[str, float]] = {}
    for mode in ("closed", "open"):
        for level, name in ((lv, n) for lv in results[mode] for n in targets):
            repeats = level["by_target"][name]["repeats"]
            if "server_breakdown" not in repeats[0]:
                continue
            merged: dict[str, list[float]] = {}
            for run in repeats:
                for key, stat in run["server_breakdown"].items():
                    merged.setdefault(_short(key), []).append(stat.get("mean_ms", stat.get("mean", 0.0)))
                for cache, rate in run.get("cache_hit_rate", {}).items():
                    merged.setdefault(f"cache hit rate: {cache}", []).append(rate)
            table[(mode, level["level"], name)] = {k: sorted(v)[len(v) // 2] for k, v in merged.items()}
    if not table:
        return []
    columns = sorted({k for row in table.values() for k in row})
    lines = [
        "## Server breakdown",
        "",
        "Means per observation from Sift's own Prometheus histograms, read before and after each run "
        "(median over repeats): request time by method, featurization by method, queue and inference time "
        "and rows per run by model.",
        "",
        "| mode | level | server | " + " | ".join(columns) + " |",
        "|---|---:|---|" + "---:|" * len(columns),
    ]
    for (mode, level, name), row in table.items():
        cells = [f"{row[c]:.3f}" if c in row else "-" for c in columns]
        lines.append(f"| {mode} | {level:g} | {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _client_cpu(results: dict[str, Any], targets: list[str]) -> list[str]:
    worst = 0.0
    for mode in ("closed", "open"):
        for level in results[mode]:
            for name in targets:
                worst = max(worst, level["by_target"][name]["median"]["client_cpu_cores"]["max"])
    return [f"Client CPU: at most {worst:.2f} cores used by the load generator in any run.", ""]


def write_results(out: Path, result: dict[str, Any], markdown: str) -> None:
    """Every command's output: results.json with every raw figure, and README.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "README.md").write_text(markdown)


def load_plots(result: dict[str, Any], directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = result["targets"]
    closed, open_ = result["results"]["closed"], result["results"]["open"]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, levels in (("closed", closed[:1] + closed[-1:]), ("open", open_[-1:])):
        for level in levels:
            for name in targets:
                hist = LatencyHistogram()
                for run in level["by_target"][name]["repeats"]:
                    hist.merge(LatencyHistogram.from_json(run["histogram"]))
                x, y = hist.cdf_ms()
                unit = "in flight" if mode == "closed" else "/s"
                ax.plot(x, y, label=f"{name}, {mode} {level['level']:g} {unit}")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("fraction of calls")
    ax.set_title("Latency CDF (all repeats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "latency_cdf.png", dpi=110)
    plt.close(fig)

    for name_, levels, x_label, y_keys, file in (
        ("throughput", closed, "calls in flight", ("qps",), "throughput_vs_concurrency.png"),
        ("latency", open_, "offered load (calls/s)", ("p50", "p99"), "latency_vs_load.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        if levels:
            xs = [lv["level"] for lv in levels]
            for name in targets:
                for key in y_keys:
                    med = [lv["by_target"][name]["median"] for lv in levels]
                    ys = [m["qps"]["median"] if key == "qps" else m["latency_ms"][key]["median"] for m in med]
                    ax.plot(xs, ys, marker="o", label=f"{name} {key}")
        if name_ == "throughput":
            ax.set_xscale("log", base=2)
            ax.set_ylabel("calls/s (median of repeats)")
        else:
            ax.set_yscale("log")
            ax.set_ylabel("latency ms (median of repeats, log)")
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / file, dpi=110)
        plt.close(fig)
