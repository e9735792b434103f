"""The pages' pure parts: periods, filters, figures from report rows, number formatting."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from exporter.httpserver import ThreadedServer
from exporter.pages.figures import OTHER, chart_from
from exporter.pages.period import MAX_DAYS, PageInputError, parse_period
from exporter.pages.routes import number, page_routes, report_chart
from exporter.pages.usage import Catalog, Filters
from exporter.reports import ChartSpec, Report, ReportError, ReportResult, parse_report

TODAY = date(2026, 3, 31)


@pytest.mark.parametrize(
    ("query", "since", "until"),
    [
        ({}, date(2026, 1, 1), TODAY),  # the default: the last 90 days
        ({"period": "this_month"}, date(2026, 3, 1), TODAY),
        ({"period": "last_month"}, date(2026, 2, 1), date(2026, 2, 28)),
        ({"period": "7d"}, date(2026, 3, 25), TODAY),
        ({"period": "30d"}, date(2026, 3, 2), TODAY),
        (
            {"period": "custom", "since": "2025-12-24", "until": "2026-01-02"},
            date(2025, 12, 24),
            date(2026, 1, 2),
        ),
        # Dates typed for another preset are ignored.
        ({"period": "7d", "since": "nonsense"}, date(2026, 3, 25), TODAY),
    ],
)
def test_periods(query: dict[str, str], since: date, until: date) -> None:
    period = parse_period(query, TODAY)
    assert (period.since, period.until) == (since, until)
    assert len(period.days) == (until - since).days + 1
    assert period.days[0] == since
    assert period.days[-1] == until


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"period": "year"}, "period: 'year' is not one of"),
        ({"period": "custom", "since": "2026-01-01"}, "until: a custom period needs both dates"),
        ({"period": "custom", "since": "01/02/2026", "until": "2026-01-03"}, "since: '01/02/2026'"),
        ({"period": "custom", "since": "2026-02-01", "until": "2026-01-01"}, "is before since"),
        ({"period": "custom", "since": "2016-01-01", "until": "2026-01-01"}, f"at most {MAX_DAYS}"),
    ],
)
def test_bad_periods_say_what_is_wrong(query: dict[str, str], message: str) -> None:
    with pytest.raises(PageInputError, match=message):
        parse_period(query, TODAY)


CATALOG = Catalog("UTC", {"shop": ("orders", "customers"), "lab": ("orders",)}, {}, None, "USD")


def test_filters() -> None:
    assert Filters.parse({"project": "shop", "source": "customers"}, CATALOG) == Filters(
        "shop", "customers"
    )
    assert Filters.parse({"source": "orders"}, CATALOG).keeps("lab", "orders")
    assert not Filters.parse({"project": "lab"}, CATALOG).keeps("shop", "orders")
    with pytest.raises(PageInputError, match="no project named 'nope' \\(known: lab, shop\\)"):
        Filters.parse({"project": "nope"}, CATALOG)
    with pytest.raises(PageInputError, match="no source named 'customers' in project 'lab'"):
        Filters.parse({"project": "lab", "source": "customers"}, CATALOG)


def test_chart_spec_parsing() -> None:
    spec = ChartSpec.parse("bar x=day y=billable_rows series=project,source top=3")
    assert spec == ChartSpec("bar", ("day",), "billable_rows", ("project", "source"), 3)
    wrong_shape = "expected: KIND x=COLUMN"
    for bad, message in [
        ("pie x=a y=b", "chart kind 'pie' is not one of bar, line"),
        ("bar x=a", wrong_shape),
        ("bar x=a y=b colour=red", wrong_shape),
        ("bar x=a y=b top=many", wrong_shape),
        ("", "chart kind '' is not one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            ChartSpec.parse(bad)


def test_a_bad_chart_line_names_the_report_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.sql"
    path.write_text("-- title: Mine\n-- chart: pie x=a y=b\nSELECT 1 AS a, 2 AS b\n")
    with pytest.raises(
        ReportError,
        match=r"mine\.sql: cannot read chart declaration 'pie x=a y=b': chart kind 'pie'",
    ):
        parse_report(path)


def test_figure_sums_per_day_fills_empty_days_and_keeps_the_top_series() -> None:
    result = ReportResult(
        ["day", "project", "source", "billable_rows"],
        [
            ("2026-03-01", "shop", "a", 10),
            ("2026-03-01", "shop", "b", 1),
            ("2026-03-01", "shop", "c", 2),
            ("2026-03-03", "shop", "a", 5),
            ("2026-03-03", "shop", "c", None),
        ],
    )
    spec = ChartSpec("bar", ("day",), "billable_rows", ("project", "source"), top=2)
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    chart = chart_from(spec, result, x_values=days, x_title="day (UTC)")
    assert chart.labels == days
    assert [(d.label, d.data) for d in chart.datasets] == [
        ("shop/a", [10, 0, 5]),
        ("shop/c", [2, 0, 0]),
        (OTHER, [1, 0, 0]),
    ]
    assert chart.stacked
    table = chart.table()
    assert table.columns == ["day (UTC)", "shop/a", "shop/c", OTHER, "total"]
    assert table.rows[0] == ["2026-03-01", 10, 2, 1, 13]
    assert table.csv().splitlines()[2] == "2026-03-02,0,0,0,0"


def test_figure_without_series_keeps_row_order_and_is_not_stacked() -> None:
    result = ReportResult(["project", "source", "ratio"], [("b", "x", 0.5), ("a", "y", 0.25)])
    chart = chart_from(ChartSpec("bar", ("project", "source"), "ratio"), result)
    assert chart.labels == ["b/x", "a/y"]
    assert [d.data for d in chart.datasets] == [[0.5, 0.25]]
    assert not chart.stacked
    assert chart.table().columns == ["project/source", "ratio"]
    with pytest.raises(ValueError, match="chart column 'nope'"):
        chart_from(ChartSpec("bar", ("nope",), "ratio"), result)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        (1234567, "1,234,567"),
        (1234567.0, "1,234,567"),
        (1234.5678, "1,234.57"),
        (0.123456, "0.1235"),
        (0.0, "0"),
        (True, "True"),
        ("2026-03-01", "2026-03-01"),
    ],
)
def test_number_formatting(value: object, shown: str) -> None:
    assert number(value) == shown


def charted_report(tmp_path: Path, header: str) -> tuple[Report, ChartSpec]:
    """A report file with ``header`` lines (a chart among them), parsed as the exporter would."""
    path = tmp_path / "charted.sql"
    path.write_text(f"-- title: Charted\n{header}SELECT 1\n")
    report = parse_report(path)
    assert report.chart is not None
    return report, report.chart


def test_a_report_chart_shows_every_day_of_its_period_and_its_timezone(tmp_path: Path) -> None:
    report, spec = charted_report(
        tmp_path,
        "-- param: since date = today-2\n-- param: until date = today\n"
        "-- param: tz tz = UTC\n-- chart: bar x=day y=n series=project\n",
    )
    bound = report.bind({"since": "2026-03-01", "until": "2026-03-03", "tz": "Asia/Tokyo"})
    result = ReportResult(["day", "project", "n"], [("2026-03-02", "shop", 4)])
    chart = report_chart(report, spec, bound, result)
    assert chart.labels == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert chart.datasets[0].data == [0, 4, 0]
    assert chart.x_title == "day (Asia/Tokyo)"


def test_other_from_a_report_stays_last_however_large() -> None:
    result = ReportResult(
        ["day", "source", "n"], [("d1", "other", 100), ("d1", "shop/a", 5), ("d1", "shop/b", 7)]
    )
    chart = chart_from(ChartSpec("bar", ("day",), "n", ("source",)), result)
    assert [d.label for d in chart.datasets] == ["shop/b", "shop/a", OTHER]


def test_a_report_chart_of_many_categories_draws_the_first_thirty(tmp_path: Path) -> None:
    report, spec = charted_report(tmp_path, "-- chart: bar x=project,source y=n\n")
    rows = [("shop", f"s{i:02}", 100 - i) for i in range(45)]
    chart = report_chart(report, spec, {}, ReportResult(["project", "source", "n"], rows))
    assert chart.labels == [f"shop/s{i:02}" for i in range(30)]


def test_a_day_axis_longer_than_ten_years_is_left_to_the_data(tmp_path: Path) -> None:
    report, spec = charted_report(
        tmp_path,
        "-- param: since date = today\n-- param: until date = today\n-- chart: bar x=day y=n\n",
    )
    bound = report.bind({"since": "1990-01-01", "until": "2026-03-01"})
    result = ReportResult(["day", "n"], [("2026-02-27", 3), ("2026-03-01", 4)])
    chart = report_chart(report, spec, bound, result)
    assert chart.labels == ["2026-02-27", "2026-03-01"]  # the newest data is not cut off


class BrokenReports:
    def reports(self) -> list[Report]:
        raise ReportError("/srv/queries: no such reports directory")

    def query(self, report: Report, params: Mapping[str, str]) -> ReportResult:
        raise AssertionError("not reached")


def test_a_broken_reports_directory_is_a_message_not_a_stack_trace() -> None:
    app = Starlette(routes=page_routes(BrokenReports(), CATALOG, lambda: datetime.now(UTC)))
    with ThreadedServer(app) as server:
        index = httpx.get(f"{server.url}/reports")
        one = httpx.get(f"{server.url}/reports/usage_daily")
    assert index.status_code == 500
    assert "/srv/queries: no such reports directory" in index.text
    assert "Traceback" not in index.text
    assert one.status_code == 404
    assert "no report 'usage_daily'" in html.unescape(one.text)
