"""Dashboards as code: builds grafana/dashboards/*.json with the typed grafana-foundation-sdk.

Run ``python grafana/build_dashboards.py`` after changing a panel; the test suite rebuilds them
and fails when the committed JSON differs, and evaluates every query against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    gauge,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).parent / "dashboards"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'project=~"$project", source=~"$source"'
Builder = Any


def query(expr: str, legend: str = "", fmt: PromQueryFormat | None = None) -> Builder:
    q = prometheus.Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if fmt is not None:
        q = q.format(fmt)
    return q


def thresholds(*steps: tuple[float | None, str]) -> Builder:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


GREEN = (None, "green")


def panel(
    kind: Callable[[], Builder],
    title: str,
    description: str,
    unit: str,
    *queries: Builder,
    span: int = 12,
    height: int = 8,
    steps: tuple[tuple[float | None, str], ...] = (GREEN,),
) -> Builder:
    p = (
        kind()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .span(span)
        .height(height)
        .thresholds(thresholds(*steps))
    )
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        p = p.with_target(q.ref_id(ref))
    return p


def base(uid: str, title: str, description: str) -> Builder:
    project = (
        dashboard.QueryVariable("project")
        .label("Project")
        .datasource(DS)
        .query("label_values(synthbrew_source_info, project)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    source = (
        dashboard.QueryVariable("source")
        .label("Source")
        .datasource(DS)
        .query('label_values(synthbrew_source_info{project=~"$project"}, source)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["synthbrew"])
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(project)
        .with_variable(source)
    )


def usage_billing() -> Builder:
    return (
        base(
            "synthbrew-usage",
            "Synthbrew / Usage and billing",
            "Billable and inserted rows by project and source, month to date, projection and cost.",
        )
        .with_row(dashboard.Row("Rows over time"))
        .with_panel(
            panel(
                timeseries.Panel,
                "Billable rows per hour",
                "Rate of billableRows of finished runs, net of later corrections (the _retracted counter), scaled to rows per hour, by source.",
                "short",
                query(
                    f"(sum by (project, source) (rate(synthbrew_generation_billable_rows_total{{{SEL}}}[$__rate_interval])) - sum by (project, source) (rate(synthbrew_generation_billable_rows_retracted_total{{{SEL}}}[$__rate_interval]))) * 3600",
                    "{{project}}/{{source}}",
                ),
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Inserted rows per hour",
                "Rate of totalInsertedRows of finished runs, net of later corrections (the _retracted counter), scaled to rows per hour, by source.",
                "short",
                query(
                    f"(sum by (project, source) (rate(synthbrew_generation_inserted_rows_total{{{SEL}}}[$__rate_interval])) - sum by (project, source) (rate(synthbrew_generation_inserted_rows_retracted_total{{{SEL}}}[$__rate_interval]))) * 3600",
                    "{{project}}/{{source}}",
                ),
            )
        )
        .with_row(dashboard.Row("This month"))
        .with_panel(
            panel(
                stat.Panel,
                "Billable rows, month to date",
                "Billable rows of runs finished this calendar month (billing.timezone), by project.",
                "short",
                query(
                    f"sum by (project) (synthbrew_billable_rows_month_to_date{{{SEL}}})",
                    "{{project}}",
                ),
                span=6,
            )
        )
        .with_panel(
            panel(
                stat.Panel,
                "Projected at month end",
                "Month-to-date billable rows projected linearly to the end of the month.",
                "short",
                query(
                    f"sum by (project) (synthbrew_billable_rows_projected_month_end{{{SEL}}})",
                    "{{project}}",
                ),
                span=6,
            )
        )
        .with_panel(
            panel(
                gauge.Panel,
                "Included rows used",
                "Month-to-date billable rows as a share of the plan's included rows"
                " (billing.included_rows).",
                "percentunit",
                query(
                    'synthbrew_billing_included_rows_used_ratio{project=~"$project"}', "{{project}}"
                ),
                span=6,
                steps=(GREEN, (0.8, "orange"), (1.0, "red")),
            )
        )
        .with_panel(
            panel(
                gauge.Panel,
                "Included rows used at month end (projected)",
                "Projected month-end usage as a share of the included rows.",
                "percentunit",
                query(
                    'synthbrew_billing_projected_included_rows_used_ratio{project=~"$project"}',
                    "{{project}}",
                ),
                span=6,
                steps=(GREEN, (0.9, "orange"), (1.0, "red")),
            )
        )
        .with_panel(
            panel(
                bargauge.Panel,
                "Top sources this month",
                "The ten sources with the most billable rows this month.",
                "short",
                query(
                    f"topk(10, sum by (project, source) (synthbrew_billable_rows_month_to_date{{{SEL}}}))",
                    "{{project}}/{{source}}",
                ),
            )
        )
        .with_panel(
            panel(
                stat.Panel,
                "Estimated cost",
                "Cost of rows beyond the included ones, month to date and projected to month end"
                " (billing.price_per_1000_rows; empty when no price is configured).",
                "none",
                query(
                    'sum by (project, currency) (synthbrew_billing_estimated_cost_month_to_date{project=~"$project"})',
                    "{{project}} to date ({{currency}})",
                ),
                query(
                    'sum by (project, currency) (synthbrew_billing_projected_cost_month_end{project=~"$project"})',
                    "{{project}} projected ({{currency}})",
                ),
            )
        )
    )


def generation_health() -> Builder:
    return (
        base(
            "synthbrew-health",
            "Synthbrew / Generation health",
            "Runs, failures, durations and runs in flight for every source.",
        )
        .with_row(dashboard.Row("Runs"))
        .with_panel(
            panel(
                timeseries.Panel,
                "Finished runs by status",
                "Finished generation runs per interval, by status.",
                "short",
                query(
                    f"sum by (status) (increase(synthbrew_generation_runs_total{{{SEL}}}[$__rate_interval]))",
                    "{{status}}",
                ),
                span=8,
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Failures",
                "Finished runs with status failed per interval, by source.",
                "short",
                query(
                    f"sum by (project, source) (increase(synthbrew_generation_failures_total{{{SEL}}}[$__rate_interval]))",
                    "{{project}}/{{source}}",
                ),
                span=8,
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Failure ratio",
                "Failed runs divided by finished runs, by source.",
                "percentunit",
                query(
                    f"sum by (project, source) (rate(synthbrew_generation_failures_total{{{SEL}}}[$__rate_interval]))"
                    f" / sum by (project, source) (rate(synthbrew_generation_runs_total{{{SEL}}}[$__rate_interval]))",
                    "{{project}}/{{source}}",
                ),
                span=8,
                steps=(GREEN, (0.1, "orange"), (0.2, "red")),
            )
        )
        .with_row(dashboard.Row("Durations"))
        .with_panel(
            panel(
                timeseries.Panel,
                "Run duration p50 / p95 / p99",
                "Quantiles of durationMs of finished runs, from the histogram.",
                "s",
                *(
                    query(
                        f"histogram_quantile({q}, sum by (le) (rate(synthbrew_generation_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
            )
        )
        .with_panel(
            panel(
                heatmap.Panel,
                "Run duration heatmap",
                "How finished runs spread over the duration buckets.",
                "s",
                query(
                    f"sum by (le) (increase(synthbrew_generation_duration_seconds_bucket{{{SEL}}}[$__rate_interval]))",
                    "{{le}}",
                    PromQueryFormat.HEATMAP,
                ),
            )
        )
        .with_panel(
            panel(
                table.Panel,
                "Failure ratio and p95 duration, last hour",
                "Per source, from the recording rules synthbrew:generation_failure_ratio:rate1h and"
                " synthbrew:generation_duration_seconds:p95_rate1h.",
                "none",
                query(
                    f"synthbrew:generation_failure_ratio:rate1h{{{SEL}}}",
                    "failure ratio",
                    PromQueryFormat.TABLE,
                ),
                query(
                    f"synthbrew:generation_duration_seconds:p95_rate1h{{{SEL}}}",
                    "p95 seconds",
                    PromQueryFormat.TABLE,
                ),
                span=24,
            )
        )
        .with_row(dashboard.Row("In flight"))
        .with_panel(
            panel(
                timeseries.Panel,
                "Runs in progress",
                "Runs now queued or active, by source and status.",
                "short",
                query(
                    f"sum by (project, source, status) (synthbrew_generation_in_progress{{{SEL}}})",
                    "{{project}}/{{source}} {{status}}",
                ),
                span=8,
            )
        )
        .with_panel(
            panel(
                stat.Panel,
                "Time since last success",
                "Seconds since the newest successful run of each source finished.",
                "s",
                query(
                    f'time() - max by (project, source) (synthbrew_generation_last_finished_timestamp_seconds{{{SEL}, status="success"}})',
                    "{{project}}/{{source}}",
                ),
                span=8,
                steps=(GREEN, (3600, "orange"), (86400, "red")),
            )
        )
        .with_panel(
            panel(
                stat.Panel,
                "Stale runs",
                "Runs that left the event window without finishing (collector.stale_after_seconds).",
                "short",
                query(
                    f"sum by (project, source) (synthbrew_generation_stale_runs{{{SEL}}})",
                    "{{project}}/{{source}}",
                ),
                span=8,
                steps=(GREEN, (1, "red")),
            )
        )
    )


def exporter() -> Builder:
    return (
        base(
            "synthbrew-exporter",
            "Synthbrew / Exporter",
            "The exporter itself: is it scraped, is every source polled, what goes wrong.",
        )
        .with_row(dashboard.Row("Health"))
        .with_panel(
            panel(
                stat.Panel,
                "Exporter up",
                "Prometheus's up metric for the exporter's scrape job.",
                "none",
                query('up{job="synthbrew-exporter"}', "{{instance}}"),
                span=6,
                steps=((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            panel(
                stat.Panel,
                "Sources up",
                "1 when the last poll of the source succeeded.",
                "none",
                query(f"synthbrew_exporter_source_up{{{SEL}}}", "{{project}}/{{source}}"),
                span=12,
                steps=((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            panel(
                table.Panel,
                "Build",
                "The running exporter's version.",
                "none",
                query("synthbrew_exporter_build_info", "{{version}}", PromQueryFormat.TABLE),
                span=6,
            )
        )
        .with_row(dashboard.Row("Polls"))
        .with_panel(
            panel(
                timeseries.Panel,
                "Polls by outcome",
                "Polls per second, by outcome.",
                "reqps",
                query(
                    f"sum by (outcome) (rate(synthbrew_exporter_polls_total{{{SEL}}}[$__rate_interval]))",
                    "{{outcome}}",
                ),
                span=8,
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Poll errors by reason",
                "Failed polls per second, by cause.",
                "reqps",
                query(
                    f"sum by (reason) (rate(synthbrew_exporter_poll_errors_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}}",
                ),
                span=8,
                steps=(GREEN, (0.01, "red")),
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Poll duration p95",
                "95th percentile of one poll of one source.",
                "s",
                query(
                    f"histogram_quantile(0.95, sum by (le) (rate(synthbrew_exporter_poll_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                    "p95",
                ),
                span=8,
            )
        )
        .with_row(dashboard.Row("Data quality"))
        .with_panel(
            panel(
                timeseries.Panel,
                "Possible missed events",
                "Polls that returned a full page of events none seen before: the window overflowed.",
                "short",
                query(
                    f"sum by (project, source) (increase(synthbrew_exporter_possible_missed_events_total{{{SEL}}}[$__rate_interval]))",
                    "{{project}}/{{source}}",
                ),
                span=8,
                steps=(GREEN, (1, "red")),
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Invalid events",
                "Events skipped because they failed validation.",
                "short",
                query(
                    f"sum by (project, source) (increase(synthbrew_exporter_invalid_events_total{{{SEL}}}[$__rate_interval]))",
                    "{{project}}/{{source}}",
                ),
                span=8,
                steps=(GREEN, (1, "orange")),
            )
        )
        .with_panel(
            panel(
                timeseries.Panel,
                "Store scrape time",
                "Time a scrape spent aggregating the DuckDB store.",
                "s",
                query("synthbrew_exporter_store_scrape_duration_seconds", "{{instance}}"),
                span=8,
                steps=(GREEN, (0.15, "orange"), (1, "red")),
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], Builder]] = {
    "usage-billing": usage_billing,
    "generation-health": generation_health,
    "exporter": exporter,
}


def render(name: str) -> str:
    built = DASHBOARDS[name]().build()
    return JSONEncoder(sort_keys=True, indent=2).encode(built) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path} ({len(json.loads(path.read_text())['panels'])} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
