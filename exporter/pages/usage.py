"""The /usage page: this month's billing per project, and where the usage of a period went.

Every number comes from a named report (``queries/``), so ``synthbrew-exporter report`` with
the same parameters gives the same numbers; the month's projection and cost are the same
functions the billing metrics use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from exporter.billing import cost, current_month, project_linear
from exporter.pages.figures import Chart, Dataset, Figure, Table, chart_from
from exporter.pages.period import PageInputError, Period
from exporter.reports import ChartSpec, Report, ReportResult

Runner = Callable[[Report, Mapping[str, str]], ReportResult]
TOP_SOURCES = 8
CHART_SOURCES = 30


@dataclass(frozen=True)
class Catalog:
    """What the pages know of the configuration: names to filter by, and the billing terms."""

    timezone: str
    projects: Mapping[str, tuple[str, ...]]  # project name -> its source names
    included_rows: Mapping[str, int]
    price_per_1000_rows: float | None
    currency: str

    def sources(self, project: str = "") -> list[str]:
        names = self.projects.get(project, ()) if project else sum(self.projects.values(), ())
        return sorted(set(names))


@dataclass(frozen=True)
class Filters:
    project: str = ""
    source: str = ""

    @classmethod
    def parse(cls, query: Mapping[str, str], catalog: Catalog) -> Filters:
        project, source = query.get("project", ""), query.get("source", "")
        if project and project not in catalog.projects:
            known = ", ".join(sorted(catalog.projects))
            raise PageInputError(f"project: no project named {project!r} (known: {known})")
        if source and source not in catalog.sources(project):
            where = f" in project {project!r}" if project else ""
            raise PageInputError(f"source: no source named {source!r}{where}")
        return cls(project, source)

    def keeps(self, project: str, source: str) -> bool:
        return self.project in ("", project) and self.source in ("", source)


FIGURES = ("month", "billable", "status", "failures", "durations")


class Usage:
    """The figures of one request; each report runs at most once however many figures use it."""

    def __init__(
        self,
        run: Runner,
        reports: Mapping[str, Report],
        catalog: Catalog,
        now: datetime,
        period: Period,
        filters: Filters,
    ) -> None:
        self._run, self._reports, self.catalog = run, reports, catalog
        self.now, self.period, self.filters = now, period, filters
        self._results: dict[tuple[object, ...], ReportResult] = {}

    def figures(self) -> list[Figure]:
        return [self.figure(name) for name in FIGURES]

    def figure(self, name: str) -> Figure:
        if name not in FIGURES:
            raise KeyError(name)
        build: Callable[[], Figure] = getattr(self, f"_{name}")
        return build()

    def _report(self, name: str, **params: str) -> ReportResult:
        key = (name, *sorted(params.items()))
        if key not in self._results:
            self._results[key] = self._run(self._reports[name], params)
        return self._results[key]

    def _period_report(self, name: str, **extra: str) -> ReportResult:
        return self._report(
            name,
            **extra,
            since=self.period.since.isoformat(),
            until=self.period.until.isoformat(),
            tz=self.catalog.timezone,
            project=self.filters.project,
            source=self.filters.source,
        )

    def _month(self) -> Figure:
        tz, now = self.catalog.timezone, self.now
        month = current_month(now, tz)
        today = now.astimezone(ZoneInfo(tz)).date()
        result = self._report(
            "billable_by_source",
            since=today.replace(day=1).isoformat(),
            until=today.isoformat(),
            tz=tz,
        )
        per_project = {p: 0.0 for p in self.catalog.projects if self.filters.keeps(p, "")}
        for record in result.records():
            configured = record["source"] in self.catalog.projects.get(record["project"], ())
            # The configured sources only, as the billing metrics count them.
            if configured and self.filters.keeps(record["project"], record["source"]):
                rows_mtd = float(record["billable_rows"] or 0)
                per_project[record["project"]] = per_project.get(record["project"], 0.0) + rows_mtd
        projects = sorted(per_project)
        to_date = [per_project[p] for p in projects]
        projected = [project_linear(v, month, now) for v in to_date]
        included = [self.catalog.included_rows.get(p) for p in projects]
        datasets = [
            Dataset("month to date", [_whole(v) for v in to_date]),
            Dataset("projected month end", [_whole(v) for v in projected]),
        ]
        if any(i is not None for i in included):
            # No bar where a project has no allowance: a bar at zero would say it has none.
            datasets.append(Dataset("included", [float(i) if i else None for i in included]))
        columns = ["project", "month to date", "projected month end", "included", "used"]
        rows: list[list[Any]] = []
        price, currency = self.catalog.price_per_1000_rows, self.catalog.currency
        if price is not None:
            columns += [f"cost to date ({currency})", f"projected cost ({currency})"]
        for p, done, ahead, allowance in zip(projects, to_date, projected, included, strict=True):
            row: list[Any] = [p, _whole(done), _whole(ahead), allowance]
            row.append(round(done / allowance, 4) if allowance else None)
            if price is not None:
                row += [
                    round(cost(done, allowance or 0, price), 2),
                    round(cost(ahead, allowance or 0, price), 2),
                ]
            rows.append(row)
        start = month.start.astimezone(ZoneInfo(tz))
        return Figure(
            "month",
            f"This month: {start:%B %Y} ({tz})",
            Chart("bar", projects, datasets, "project", "billable rows"),
            Table(columns, rows),
            note=(
                "Projected month end: the month so far at its average rate. "
                f"{month.elapsed_fraction(now):.0%} of the month has passed."
            ),
        )

    def _billable(self) -> Figure:
        spec = ChartSpec("bar", ("day",), "billable_rows", ("source",))
        chart = chart_from(
            spec,
            self._period_report("usage_by_source_daily", top=str(TOP_SOURCES)),
            x_values=[d.isoformat() for d in self.period.days],
            x_title=f"day ({self.catalog.timezone})",
            y_title="billable rows",
        )
        note = f"Top {TOP_SOURCES} sources by billable rows; the rest summed as 'other'."
        return Figure("billable", "Billable rows per day", chart, chart.table(), note)

    def _status(self) -> Figure:
        spec = ChartSpec("bar", ("day",), "runs", ("status",))
        chart = chart_from(
            spec,
            self._period_report("runs_by_status_daily"),
            x_values=[d.isoformat() for d in self.period.days],
            x_title=f"day ({self.catalog.timezone})",
            y_title="finished runs",
        )
        return Figure("status", "Finished runs per day by status", chart, chart.table())

    def _failures(self) -> Figure:
        return self._by_source(
            "failures",
            "Failure ratio by source",
            "failure_ratio",
            "failure ratio (failed / finished runs)",
            ["runs", "failed", "failure_ratio"],
        )

    def _durations(self) -> Figure:
        return self._by_source(
            "durations",
            "Run duration by source (p95)",
            "p95_seconds",
            "p95 duration (seconds)",
            ["runs", "p50_seconds", "p95_seconds"],
            note="Percentiles of durationMs over the runs finished in the period, to within"
            " about 2 %.",
        )

    def _by_source(
        self, id: str, title: str, y: str, y_title: str, columns: list[str], note: str = ""
    ) -> Figure:
        result = self._period_report("source_health")
        rows = sorted(result.records(), key=lambda r: -(r[y] or 0))
        # A bar per source is unreadable past a few dozen; the table below has every source.
        drawn = ReportResult(result.columns, [tuple(r.values()) for r in rows[:CHART_SOURCES]])
        chart = chart_from(
            ChartSpec("bar", ("project", "source"), y), drawn, x_title="source", y_title=y_title
        )
        table = Table(
            ["project", "source", *columns],
            [[r["project"], r["source"], *(r[c] for c in columns)] for r in rows],
        )
        if len(rows) > CHART_SOURCES:
            note = f"{note} The chart shows the {CHART_SOURCES} highest; the table every source."
        return Figure(id, title, chart, table, note.strip())


def _whole(value: float) -> float:
    return float(round(value))
