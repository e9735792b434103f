"""The /usage and /reports pages: HTML from Jinja2 templates, charts drawn in the browser by
the vendored Chart.js, everything served from the package (no CDN, no internet).

User input reaches SQL only as a report's bound parameters; a bad value gets its message on
the page with status 400, a report the database cannot run now (out of memory) 503, never a
stack trace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from exporter import __version__
from exporter.errors import ExporterError
from exporter.pages.figures import Chart, Table, chart_from
from exporter.pages.period import PRESETS, PageInputError, Period, parse_period
from exporter.pages.usage import FIGURES, Catalog, Filters, Usage
from exporter.report_output import render
from exporter.reports import ChartSpec, Report, ReportError, ReportResult, load_reports

STATIC = Path(__file__).parent / "static"
MAX_AXIS_DAYS = 3660  # a longer day axis is left to the data: filling it would be unreadable
MAX_BARS = 30  # a chart of more categories (sources, say) draws the first 30 of the table
# Scripts and styles only from the exporter itself; chart data travels as inert JSON.
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class ReportSource(Protocol):
    """Where the pages get their numbers: the running exporter's store, on reader cursors."""

    def reports(self) -> Sequence[Report]: ...

    def query(self, report: Report, params: Mapping[str, str]) -> ReportResult: ...


def number(value: Any) -> str:
    """A cell as people read it: thousands separated, ratios and seconds to a few digits."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"


_env = Environment(
    loader=PackageLoader("exporter.pages"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
)
_env.filters["number"] = number


def report_chart(
    report: Report, spec: ChartSpec, bound: Mapping[str, Any], result: ReportResult
) -> Chart:
    """A report's chart with honest axes: a day axis has every day from ``since`` to ``until``
    (empty days too, up to :data:`MAX_AXIS_DAYS`), a calendar axis names the report's timezone,
    and any other axis has the first :data:`MAX_BARS` categories in the report's order."""
    x_values = None
    x_title = "/".join(spec.x)
    if spec.x == ("day",) and isinstance(bound.get("since"), date):
        until = bound.get("until", bound["since"])
        days = (until - bound["since"]).days + 1
        if 0 < days <= MAX_AXIS_DAYS:
            x_values = [(bound["since"] + timedelta(days=i)).isoformat() for i in range(days)]
    elif spec.x not in (("day",), ("month",)):
        index = [result.columns.index(c) for c in spec.x if c in result.columns]
        firsts: dict[tuple[Any, ...], None] = {}
        for row in result.rows:
            firsts.setdefault(tuple(row[i] for i in index), None)
            if len(firsts) > MAX_BARS:
                break
        if len(firsts) > MAX_BARS:
            keep = set(list(firsts)[:MAX_BARS])
            rows = [r for r in result.rows if tuple(r[i] for i in index) in keep]
            result = ReportResult(result.columns, rows)
    if spec.x in (("day",), ("month",)) and "tz" in bound:
        x_title += f" ({bound['tz']})"
    return chart_from(spec, result, x_values=x_values or None, x_title=x_title)


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(version=__version__, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _download(body: str, media_type: str, filename: str) -> Response:
    disposition = f'attachment; filename="{filename}"'
    return Response(body, media_type=media_type, headers={"content-disposition": disposition})


def page_routes(
    source: ReportSource, catalog: Catalog, now: Callable[[], datetime]
) -> list[BaseRoute]:
    """Routes for the pages. /usage is built from the package's own reports, whatever
    ``reports.queries_dir`` says; /reports lists the configured ones.

    Long only because its handlers are closures over ``source``, ``catalog`` and ``now``
    (as Starlette's endpoints take only the request); each handler is a few lines."""
    usage_reports = load_reports()

    def usage_for(request: Request) -> tuple[Usage | None, Period | None, Filters, str]:
        query = request.query_params
        moment = now()
        today = moment.astimezone(ZoneInfo(catalog.timezone)).date()
        try:
            period = parse_period(query, today)
            filters = Filters.parse(query, catalog)
        except PageInputError as exc:
            return None, None, Filters(), str(exc)
        usage = Usage(source.query, usage_reports, catalog, moment, period, filters)
        return usage, period, filters, ""

    async def usage_page(request: Request) -> Response:
        usage, period, filters, error = usage_for(request)
        figures = []
        status = 400 if error else 200
        if usage is not None:
            try:
                figures = await run_in_threadpool(usage.figures)
            except ExporterError as exc:  # the kind says whose it is: 400, or 503 (memory)
                error, status = str(exc), exc.http_status
        return _page(
            "usage.html",
            status,
            figures=figures,
            period=period,
            filters=filters,
            query=request.url.query,
            presets=PRESETS,
            form=request.query_params,
            catalog=catalog,
            error=error,
        )

    async def usage_csv(request: Request) -> Response:
        usage, period, _, error = usage_for(request)
        if usage is None or period is None:
            return Response(f"{error}\n", status_code=400, media_type="text/plain")
        name = request.path_params["figure"]
        if name not in FIGURES:
            return Response(f"no figure named {name!r}\n", status_code=404, media_type="text/plain")
        try:
            figure = await run_in_threadpool(usage.figure, name)
        except ExporterError as exc:
            return Response(f"{exc}\n", status_code=exc.http_status, media_type="text/plain")
        filename = f"usage-{name}-{period.since}-{period.until}.csv"
        return _download(figure.table.csv(), "text/csv; charset=utf-8", filename)

    async def reports_index(request: Request) -> Response:
        try:
            reports = await run_in_threadpool(source.reports)
        except ReportError as exc:  # reports.queries_dir missing, or a header it cannot read
            return _page("reports.html", 500, reports=[], error=str(exc))
        return _page("reports.html", reports=reports, error="")

    def find(name: str) -> Report | None:
        try:
            return {r.name: r for r in source.reports()}.get(name)
        except ReportError:  # the reports directory is broken: the index page says how
            return None

    def given(report: Report, request: Request) -> dict[str, str]:
        """The parameters filled in; an empty field means the report's default."""
        return {p.name: v for p in report.params if (v := request.query_params.get(p.name, ""))}

    async def report_page(request: Request) -> Response:
        name = request.path_params["name"]
        report = await run_in_threadpool(find, name)
        if report is None:
            return _page("report.html", 404, report=None, name=name, error=f"no report {name!r}")
        params = given(report, request)
        result: ReportResult | None = None
        chart: Chart | None = None
        error, status = "", 200
        try:
            result = await run_in_threadpool(source.query, report, params)
            if report.chart is not None:
                chart = report_chart(report, report.chart, report.bind(params), result)
        except ExporterError as exc:
            error, status = str(exc).removeprefix("--param "), exc.http_status
        except ValueError as exc:  # a chart that cannot be drawn from these rows
            error, status = str(exc), 400
        table = Table(result.columns, [list(r) for r in result.plain().rows]) if result else None
        return _page(
            "report.html",
            status,
            report=report,
            name=name,
            params=params,
            table=table,
            chart=chart,
            query=request.url.query,
            error=error,
        )

    async def report_download(request: Request) -> Response:
        name, fmt = request.path_params["name"], request.path_params["format"]
        report = await run_in_threadpool(find, name)
        if report is None or fmt not in ("csv", "json"):
            return Response("not found\n", status_code=404, media_type="text/plain")
        try:
            result = await run_in_threadpool(source.query, report, given(report, request))
        except ExporterError as exc:
            return Response(f"{exc}\n", status_code=exc.http_status, media_type="text/plain")
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        return _download(render(result, fmt), media, f"{name}.{fmt}")

    return [
        Route("/usage", usage_page),
        Route("/usage/{figure}.csv", usage_csv),
        Route("/reports", reports_index),
        Route("/reports/{name}.{format}", report_download),
        Route("/reports/{name}", report_page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
