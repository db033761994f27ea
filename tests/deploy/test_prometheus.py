"""deploy/prometheus: promtool checks the config and the rules and runs their unit tests; then a real
Prometheus scrapes a live sift-serve under load, and its HTTP API answers the latency quantiles, the recording
rules, an alert and every query of the Grafana dashboard."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from server._proto.sift.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.conftest import ROOT, LiveServer, free_port, start_server, stop_server

PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "sift-dashboard.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed")

# The RPCs the load calls, each a few hundred times; GetModelInfo is cheap, ReloadBundle is called once.
METHODS = ("ClassifyIntent", "ScoreRelevance", "Search", "EmbedQuery", "GetModelInfo")
CALLS_PER_METHOD = 200
QUERIES = ("oak coffee table", "velvet accent chair", "area rugs", "nonstick frying pan", "walnut desk")
# Sift flags that make every dashboard panel show data: a response cache and the micro-batcher.
SERVER_FLAGS = ("--cache-size", "64", "--batch-max-size", "8", "--batch-max-wait-us", "200")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules, tests = ((PROM_DIR / name).read_text() for name in ("rules.yml", "rules_test.yml"))
    alerts = set(re.findall(r"^\s*- alert: (\w+)", rules, re.M))
    fired = set()
    # An alert counts as tested when some alert_rule_test expects it with labels (that is, firing).
    for block in re.split(r"^\s*- alertname: ", tests, flags=re.M)[1:]:
        name, body = block.split("\n", 1)
        if "exp_labels:" in re.split(r"^  - name: ", body, flags=re.M)[0]:
            fired.add(name.strip())
    assert alerts and alerts <= fired, f"alerts never shown to fire: {sorted(alerts - fired)}"


@needs_promtool
def test_kubernetes_example_is_valid(tmp_path: Path) -> None:
    """The commented kubernetes_sd job, uncommented, is a valid scrape config."""
    text = (PROM_DIR / "prometheus.yml").read_text()
    head, example = text.split("  # On Kubernetes", 1)
    lines = example.splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - job_name"))
    job = "\n".join(line.replace("  # ", "  ", 1) for line in lines[start:] if line.startswith("  # "))
    assert "app_kubernetes_io_name" in job and "regex: sift" in job
    (tmp_path / "rules.yml").write_text((PROM_DIR / "rules.yml").read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text(head.replace("- job_name: sift", "- job_name: sift-static") + job + "\n")
    result = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        pytest.skip("this promtool is built without Kubernetes service discovery (Debian's is)")
    assert result.returncode == 0, result.stdout + result.stderr


# --- a real Prometheus scraping a live server -------------------------------------------------------------


def drive_load(
    server: LiveServer, bundle: Path, per_method: int = CALLS_PER_METHOD, bad: int = 5
) -> dict[str, int]:
    """`per_method` calls of each RPC from 4 threads, `bad` bad ones of two kinds (INVALID_ARGUMENT and
    NOT_FOUND) and, when `bad` is set, one refused bundle reload (FAILED_PRECONDITION, counted in
    sift_bundle_load_failures_total). Returns the calls by status code."""
    with server.channel() as channel:
        intent = intent_pb2_grpc.IntentServiceStub(channel)
        relevance = relevance_pb2_grpc.RelevanceServiceStub(channel)
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        info = info_pb2_grpc.InfoServiceStub(channel)
        calls: list[Callable[[], Any]] = []
        for i, query in zip(range(per_method), itertools.cycle(QUERIES)):
            title = f"{query} {i % 7}"
            calls += [
                lambda q=query: intent.ClassifyIntent(intent_pb2.ClassifyIntentRequest(query=q, top_k=3)),
                lambda q=query, t=title: relevance.ScoreRelevance(
                    relevance_pb2.ScoreRelevanceRequest(
                        query=q,
                        candidates=[relevance_pb2.Candidate(title=t), relevance_pb2.Candidate(title=q)],
                    )
                ),
                lambda q=query: retrieval.Search(retrieval_pb2.SearchRequest(query=q, k=10)),
                lambda q=query: retrieval.EmbedQuery(retrieval_pb2.EmbedQueryRequest(query=q)),
                lambda: info.GetModelInfo(info_pb2.GetModelInfoRequest()),
            ]
        unknown = relevance_pb2.ScoreRelevanceRequest(
            query="oak", candidates=[relevance_pb2.Candidate(product_id="NO-SUCH-PRODUCT")]
        )
        calls += [lambda: retrieval.Search(retrieval_pb2.SearchRequest(query="oak", k=5000))] * bad
        calls += [lambda: relevance.ScoreRelevance(unknown)] * bad
        if bad:
            missing = admin_pb2.ReloadBundleRequest(path=str(bundle.parent / "no-such-bundle"))
            calls.append(lambda: admin_pb2_grpc.AdminServiceStub(channel).ReloadBundle(missing))

        def call(fn: Callable[[], Any]) -> str:
            try:
                fn()
            except grpc.RpcError as e:
                return e.code().name
            return "OK"

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(call, calls))
    return {code: codes.count(code) for code in sorted(set(codes))}


@pytest.fixture(scope="module")
def loaded_sift(tiny_bundle: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_bundle, *SERVER_FLAGS)
    yield server
    if server.process.poll() is None:
        stop_server(server)


def prometheus_config(metrics_port: int, tmp: Path) -> Path:
    """deploy/prometheus/prometheus.yml with 1 s intervals, the live server as its target and rules.yml by
    absolute path: the shipped file itself, so a broken one fails here too."""
    text = (PROM_DIR / "prometheus.yml").read_text()
    for old, new in (
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ('targets: ["localhost:9095"]', f'targets: ["127.0.0.1:{metrics_port}"]'),
        ("  - rules.yml", f"  - {PROM_DIR / 'rules.yml'}"),
    ):
        assert text.count(old) == 1, f"{old!r} not found once in prometheus.yml"
        text = text.replace(old, new)
    path = tmp / "prometheus.yml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def run_prometheus(config: Path, tmp: Path) -> Iterator[str]:
    """A real Prometheus on a free port with its storage in `tmp`; yields its base URL, then stops it."""
    url = f"http://127.0.0.1:{free_port()}"
    log_path = tmp / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: http_ok(f"{url}/-/ready"), 30, "Prometheus ready", process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> Any:
    """Polls `check` until it returns something truthy; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            log = log_path.read_text() if log_path else ""
            raise AssertionError(
                f"Prometheus exited with {process.returncode} while waiting for {what}:\n{log}"
            )
        if result := check():
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query through /api/v1/query; the result vector (status must be success)."""
    params = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def by_method(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"].get("method", ""): float(r["value"][1]) for r in result}


P99 = "histogram_quantile(0.99, sum by (le, method) (rate(sift_request_duration_seconds_bucket[1m])))"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with Grafana's variables replaced as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$job", "sift")):
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unhandled variable in {expr}"
            out.append((panel["title"], expr))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus is not installed")
def test_real_prometheus_scrapes_sift(loaded_sift: LiveServer, tiny_bundle: Path, tmp_path: Path) -> None:
    config = prometheus_config(loaded_sift.metrics_port, tmp_path)
    with run_prometheus(config, tmp_path) as url:
        # Scraped at least once before the load, so rates and increase() have a starting sample.
        wait_for(lambda: query(url, 'up{job="sift"} == 1'), 20, "the first scrape of sift")
        # Sift creates a series at its first observation, and Prometheus reads a series' first sample as its
        # start, not as an increase from 0: one call of each kind first, scraped, so the load shows in rate().
        drive_load(loaded_sift, tiny_bundle, per_method=1, bad=1)
        warm = f'count(sift_request_duration_seconds_count{{job="sift", method=~"{"|".join(METHODS)}"}})'
        wait_for(lambda: query(url, f"{warm} >= {len(METHODS) + 2}"), 20, "the warm-up calls to be scraped")
        codes = drive_load(loaded_sift, tiny_bundle)
        print(f"\ncalls by status code: {codes}")
        assert codes["OK"] == CALLS_PER_METHOD * len(METHODS)
        assert codes["INVALID_ARGUMENT"] == 5 and codes["NOT_FOUND"] == 5
        assert codes["FAILED_PRECONDITION"] == 1

        def p99_everywhere() -> dict[str, float] | None:
            values = by_method(query(url, P99))
            return values if set(METHODS) <= {m for m, v in values.items() if math.isfinite(v)} else None

        p99 = wait_for(p99_everywhere, 30, f"a finite p99 for every method from {P99}")
        print(f"Prometheus query: {P99}")
        for method, value in sorted(p99.items()):
            print(f"  {method:<15} p99 = {value * 1000:8.3f} ms")
        for method in METHODS:
            assert 0 < p99[method] < 5, (method, p99[method])

        # The rules run every second, maybe on the scrape before the load: poll for values that show it.
        def finite_for_every_method(promql: str) -> dict[str, float] | None:
            values = by_method(query(url, promql))
            ok = all(math.isfinite(values.get(m, math.nan)) and values[m] > 0 for m in METHODS)
            return values if ok else None

        recorded = wait_for(
            lambda: finite_for_every_method("job_method:sift_request_duration_seconds:p99_rate1m"),
            30,
            "the p99 recording rule to show the load",
        )
        print(f"recording rule job_method:sift_request_duration_seconds:p99_rate1m: {recorded}")
        wait_for(lambda: finite_for_every_method("job_method:sift_requests:rate1m"), 30, "the QPS rule")
        invalid = 'job_method_code:sift_requests:rate1m{code="INVALID_ARGUMENT"} > 0'
        errors = wait_for(lambda: query(url, invalid), 30, "the INVALID_ARGUMENT calls in the rate rule")
        assert [r["metric"]["method"] for r in errors] == ["Search"], errors

        # The refused reload fires SiftBundleLoadFailed (no `for`: at the next evaluation).
        firing = 'ALERTS{alertname="SiftBundleLoadFailed", alertstate="firing"}'
        wait_for(lambda: query(url, firing), 30, "SiftBundleLoadFailed to fire")

        # Every query of the Grafana dashboard is valid PromQL and has data from this server.
        empty = [(title, expr) for title, expr in dashboard_queries() if not query(url, expr)]
        assert not empty, f"dashboard queries without data: {empty}"
