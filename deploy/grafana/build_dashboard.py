"""Writes sift-dashboard.json, Sift's Grafana dashboard, from typed builders.

The builders come from grafana-foundation-sdk (types generated from Grafana 11.6's dashboard schema), so a
misspelled option is an AttributeError here rather than a panel Grafana silently ignores. Regenerate after
editing this file:

    .venv/bin/python deploy/grafana/build_dashboard.py            # rewrites sift-dashboard.json beside it
    .venv/bin/python deploy/grafana/build_dashboard.py --check    # exits 1 when the JSON is stale

Every query reads the metrics of server/metrics.py directly (not the recording rules), so the dashboard
works on a Prometheus without rules.yml; tests/deploy check each metric name against a live server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parent / "sift-dashboard.json"
UID = "sift-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job"'  # every query is limited to the chosen Sift jobs
RATE = "$__rate_interval"


def query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def quantiles(metric: str, by: str, extra: str = "") -> list[Dataquery]:
    """p50, p90 and p99 of a histogram, one series per `by` label value."""
    matcher = f"{SEL}, {extra}" if extra else SEL
    return [
        query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{matcher}}}[{RATE}])))",
            f"{{{{{by}}}}} p{round(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]


def timeseries(
    title: str, description: str, unit: str, targets: list[Dataquery], width: int = 12
) -> Timeseries:
    panel = (
        Timeseries()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def build() -> Dashboard:
    latency = "Time from receiving an RPC to returning its answer (sift_request_duration_seconds)."
    return (
        Dashboard("Sift")
        .uid(UID)
        .description(
            "Sift gRPC inference service: traffic, errors, latency by stage, batching, cache, bundle."
        )
        .tags(["sift", "grpc", "inference"])
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(sift_bundle_info, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(Row("Traffic"))
        .with_panel(
            timeseries(
                "Requests per second by method",
                "Calls answered per second, every status code included.",
                "reqps",
                [
                    query(
                        f"sum by (method) (rate(sift_request_duration_seconds_count{{{SEL}}}[{RATE}]))",
                        "{{method}}",
                    )
                ],
            )
        )
        .with_panel(
            timeseries(
                "Errors by code",
                "Calls per second that ended with a status other than OK, by method and gRPC code. "
                "INVALID_ARGUMENT and NOT_FOUND are the caller's mistakes; RESOURCE_EXHAUSTED is load "
                "shedding.",
                "reqps",
                [
                    query(
                        "sum by (method, code) "
                        f'(rate(sift_request_duration_seconds_count{{{SEL}, code!="OK"}}[{RATE}]))',
                        "{{method}} {{code}}",
                    )
                ],
            )
        )
        .with_row(Row("Latency"))
        .with_panel(
            timeseries(
                "Request latency by method (p50, p90, p99)",
                latency,
                "s",
                quantiles("sift_request_duration_seconds", "method"),
                width=24,
            )
        )
        .with_panel(
            timeseries(
                "Featurize time by method (p50, p90, p99)",
                "Time turning request texts into model inputs (sift_featurize_duration_seconds).",
                "s",
                quantiles("sift_featurize_duration_seconds", "method"),
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Queue time by model (p50, p90, p99)",
                "Time a batch's oldest call waited in the micro-batcher before its model run "
                "(sift_queue_duration_seconds); empty unless --batch-max-size is above 1.",
                "s",
                quantiles("sift_queue_duration_seconds", "model"),
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Inference time by model (p50, p90, p99)",
                "Time in one onnxruntime call (sift_inference_duration_seconds).",
                "s",
                quantiles("sift_inference_duration_seconds", "model"),
                width=8,
            )
        )
        .with_row(Row("Batching, cache and bundle"))
        .with_panel(
            timeseries(
                "Batch size by model",
                "Rows per onnxruntime call (sift_inference_batch_size): the mean, and the histogram's p99.",
                "short",
                [
                    query(
                        f"sum by (model) (rate(sift_inference_batch_size_sum{{{SEL}}}[{RATE}]))"
                        f" / sum by (model) (rate(sift_inference_batch_size_count{{{SEL}}}[{RATE}]))",
                        "{{model}} mean",
                        "A",
                    ),
                    query(
                        "histogram_quantile(0.99, sum by (le, model) "
                        f"(rate(sift_inference_batch_size_bucket{{{SEL}}}[{RATE}])))",
                        "{{model}} p99",
                        "B",
                    ),
                ],
                width=8,
            )
        )
        .with_panel(
            timeseries(
                "Cache hit rate",
                "Share of response-cache lookups that hit (sift_cache_requests_total); "
                "empty when --cache-size is 0.",
                "percentunit",
                [
                    query(
                        f'sum by (method) (rate(sift_cache_requests_total{{{SEL}, result="hit"}}[{RATE}]))'
                        f" / sum by (method) (rate(sift_cache_requests_total{{{SEL}}}[{RATE}]))",
                        "{{method}}",
                    )
                ],
                width=8,
            ).max(1)
        )
        .with_panel(
            Stat()
            .title("Bundle version")
            .description(
                "The artifact bundle each replica serves (sift_bundle_info), with how many serve it."
            )
            .datasource(DATASOURCE)
            .span(8)
            .height(8)
            .with_target(
                query(
                    f"count by (version, schema_version) (sift_bundle_info{{{SEL}}} == 1)",
                    "{{version}} (schema {{schema_version}})",
                )
            )
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.NONE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .unit("none")
            .decimals(0)
        )
        .with_panel(
            Stat()
            .title("Bundle load failures")
            .description(
                "Bundles refused at load or reload in the time range (sift_bundle_load_failures_total)."
            )
            .datasource(DATASOURCE)
            .span(8)
            .height(8)
            .with_target(
                query(f"sum(increase(sift_bundle_load_failures_total{{{SEL}}}[$__range]))", "refused")
            )
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .unit("none")
            .decimals(0)
            .thresholds(
                ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps([Threshold(value=None, color="green"), Threshold(value=1, color="red")])
            )
        )
        .with_panel(
            timeseries(
                "Requests in flight by method",
                "RPCs being handled right now (sift_requests_in_flight), summed over replicas.",
                "short",
                [query(f"sum by (method) (sift_requests_in_flight{{{SEL}}})", "{{method}}")],
                width=16,
            )
        )
    )


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON file is not up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    text = render()
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    json.loads(text)  # the encoder's output is plain JSON
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
