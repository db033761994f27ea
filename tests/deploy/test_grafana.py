"""deploy/grafana: the dashboard JSON is what build_dashboard.py writes, it conforms to Grafana's dashboard
schema (the typed models grafana-foundation-sdk generates from it), and every metric its queries read is one
a live sift-serve exports, or a recording rule of deploy/prometheus/rules.yml."""

from __future__ import annotations

import copy
import enum
import importlib.util
import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, LiveServer, start_server, stop_server
from tests.deploy.test_prometheus import SERVER_FLAGS, drive_load

GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "sift-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"]


GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"} | {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are neither functions, keywords, label
    names in a grouping clause or a selector, strings, durations nor numbers."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = GROUPING.sub("", expr)
    # label_values(metric, label) is Grafana's, not PromQL: its first argument is a metric.
    expr = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name not in KEYWORDS and not re.fullmatch(r"(?i)inf|nan", name):
            names.add(name)
    return names


def test_metric_names_parser() -> None:
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, method) "
        '(rate(sift_x_bucket{job=~"$job", a="b"}[$__rate_interval])))'
    ) == {"sift_x_bucket"}
    assert metric_names("sum(a) / sum without (x) (b:c:d offset 5m) > bool 0.5") == {"a", "b:c:d"}
    assert metric_names("label_values(sift_bundle_info, job)") == {"sift_bundle_info"}


def test_dashboard_is_generated() -> None:
    """sift-dashboard.json is exactly what deploy/grafana/build_dashboard.py writes."""
    pytest.importorskip("grafana_foundation_sdk")
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA_DIR / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), (
        "stale: run .venv/bin/python deploy/grafana/build_dashboard.py"
    )


# --- validation against Grafana's schema -------------------------------------------------------------------


def schema_errors(dashboard: dict[str, Any]) -> list[str]:
    """Checks a dashboard against the grafana-foundation-sdk models (generated from Grafana's CUE schema):
    decoded into them, every field must hold its schema type (enums and literals by value), every panel's
    options and every query must decode into its plugin's model, and encoding the models again must give back
    the same JSON, so no key is unknown to the schema."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models import prometheus

    register_default_plugins()
    errors: list[str] = []
    decoded = model.Dashboard.from_json(copy.deepcopy(dashboard))
    check_model(decoded, "dashboard", errors)
    for i, panel in enumerate(decoded.panels or []):
        where = f"panels[{i}] ({panel.title})"
        if isinstance(panel, model.RowPanel):
            continue
        if isinstance(panel.options, dict):
            errors.append(f"{where}: panel type {panel.type_val!r} has no options schema")
        for j, target in enumerate(panel.targets or []):
            if not isinstance(target, prometheus.Dataquery):
                errors.append(f"{where}.targets[{j}]: not a Prometheus query ({type(target).__name__})")
    encoded = json.loads(JSONEncoder().encode(decoded))
    errors += [f"{path}: {problem}" for path, problem in diff(dashboard, encoded, "dashboard")]
    return errors


def check_model(obj: Any, path: str, errors: list[str]) -> None:
    for name, hint in typing.get_type_hints(type(obj)).items():
        check_value(getattr(obj, name), hint, f"{path}.{name}", errors)


def check_value(value: Any, hint: Any, path: str, errors: list[str]) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (Any, object):  # panel options, field config, queries: the plugin's model, decoded by type
        if type(value).__module__.startswith("grafana_foundation_sdk."):
            check_model(value, path, errors)
        return
    if origin in (typing.Union, types.UnionType):
        alternatives = [a for a in args if a is not type(None)]
        if value is None:
            if len(alternatives) == len(args):
                errors.append(f"{path}: null is none of {hint}")
            return
        # One alternative left, or the model class the value was decoded into: report its own errors.
        decoded = [
            a for a in alternatives if isinstance(a, type) and hasattr(a, "to_json") and isinstance(value, a)
        ]
        if len(alternatives) == 1 or decoded:
            check_value(value, (decoded or alternatives)[0], path, errors)
            return
        for alternative in alternatives:
            trial: list[str] = []
            check_value(value, alternative, path, trial)
            if not trial:
                return
        errors.append(f"{path}: {value!r} is none of {alternatives}")
    elif origin is typing.Literal:
        if value not in args:
            errors.append(f"{path}: {value!r} is not one of {args}")
    elif origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: {value!r} is not a list")
        else:
            for i, item in enumerate(value):
                check_value(item, args[0] if args else Any, f"{path}[{i}]", errors)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: {value!r} is not an object")
        else:
            for key, item in value.items():
                check_value(item, args[1] if args else Any, f"{path}.{key}", errors)
    elif hint is type(None):
        if value is not None:
            errors.append(f"{path}: {value!r} is not null")
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value not in {m.value for m in hint}:
            errors.append(f"{path}: {value!r} is not a {hint.__name__} ({[m.value for m in hint]})")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{path}: {value!r} is not a number")
    elif hint in (int, str, bool):
        if isinstance(value, bool) is not (hint is bool) or not isinstance(value, hint):
            errors.append(f"{path}: {value!r} is not {hint.__name__}")
    elif isinstance(hint, type):
        if not isinstance(value, hint):
            errors.append(f"{path}: {type(value).__name__} is not {hint.__name__}")
        else:
            check_model(value, path, errors)


def diff(a: Any, b: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if key not in b:
                yield f"{path}.{key}", "not in the schema (dropped on decoding)"
            elif key not in a:
                yield f"{path}.{key}", f"the schema adds {b[key]!r}"
            else:
                yield from diff(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from diff(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield path, f"{a!r} reads back as {b!r}"


def test_dashboard_matches_grafana_schema() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    dashboard = load_dashboard()
    assert schema_errors(dashboard) == []
    assert dashboard["uid"] == "sift-overview" and dashboard["schemaVersion"] >= 39
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    for needed in ("latency", "requests per second", "errors by code", "queue", "inference", "batch size"):
        assert any(needed in t.lower() for t in titles), (needed, titles)
    assert {"Cache hit rate", "Bundle version"} <= set(titles)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["panels"][1].update(gridPoss=d["panels"][1]["gridPos"]),  # unknown key
        lambda d: d["panels"][1]["fieldConfig"]["defaults"].update(min="0"),  # wrong type
        lambda d: d["panels"][1]["options"]["legend"].update(placement="left"),  # not an enum value
        lambda d: d["panels"][1].update(type="timeseriez"),  # unknown panel type
        lambda d: d.update(graphTooltip=7),  # not a DashboardCursorSync
    ],
    ids=["unknown-key", "wrong-type", "bad-enum", "bad-panel-type", "bad-int-enum"],
)
def test_schema_check_catches(break_it: Any) -> None:
    pytest.importorskip("grafana_foundation_sdk")
    dashboard = load_dashboard()
    break_it(dashboard)
    assert schema_errors(dashboard)


# --- every metric exists ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_names(tiny_bundle: Path) -> set[str]:
    """Sample names on a live server's /metrics (cache and batcher on, after some calls, so every family
    has samples)."""
    server: LiveServer = start_server(tiny_bundle, *SERVER_FLAGS)
    try:
        drive_load(server, tiny_bundle, per_method=3, bad=1)
        text = server.metrics()
    finally:
        stop_server(server)
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_dashboard_metrics_exist(exported_names: set[str]) -> None:
    recorded = set(re.findall(r"^\s*- record: (\S+)", RULES.read_text(), re.M))
    assert recorded, "no recording rules found"
    used: dict[str, set[str]] = {}
    for where, expr in queries(load_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        for name in names:
            used.setdefault(name, set()).add(where)
    missing = {name: sorted(where) for name, where in used.items() if name not in exported_names | recorded}
    assert not missing, f"metrics the dashboard reads that Sift does not export: {missing}"
    # The panels the issue asks for read these families.
    for family in (
        "sift_request_duration_seconds_bucket",
        "sift_request_duration_seconds_count",
        "sift_featurize_duration_seconds_bucket",
        "sift_queue_duration_seconds_bucket",
        "sift_inference_duration_seconds_bucket",
        "sift_inference_batch_size_count",
        "sift_cache_requests_total",
        "sift_bundle_info",
    ):
        assert family in used, family
