"""/usage and /reports in a real headless Chromium, against `run` fed by the simulator.

The browser is Debian's chromium driven through its chromedriver (selenium); the test command
installs both. Each page is loaded as a user would, and checked for what a user would see:
no console errors, charts that drew marks, tables whose numbers are the `report` command's.
Screenshots of each page go to ``$SYNTHBREW_SCREENSHOTS`` (default ``build/screenshots``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from exporter.simulator import Scenario
from tests.factories import EXE
from tests.runners import Running, Sim, scrape, started

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TZ = "America/New_York"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("SYNTHBREW_SCREENSHOTS", ROOT / "build" / "screenshots"))

# Each chart's marks with a value, and each figure's table (header, then cells: the raw
# number a cell sorts by where it has one).
MARKS_JS = """
return Array.from(document.querySelectorAll("canvas[data-chart]")).map(function (c) {
  var chart = Chart.getChart(c), n = 0;
  chart.data.datasets.forEach(function (d, i) {
    chart.getDatasetMeta(i).data.forEach(function (el, j) { if (d.data[j]) { n++; } });
  });
  return [c.id.replace("chart-", ""), n, chart.data.labels.length];
});
"""
TABLE_JS = """
var table = document.querySelector(arguments[0]);
var head = Array.from(table.querySelectorAll("thead th")).map(function (th) {
  return th.textContent; });
var rows = Array.from(table.querySelectorAll("tbody tr")).map(function (tr) {
  return Array.from(tr.cells).map(function (td) {
    return td.hasAttribute("data-sort") ? Number(td.getAttribute("data-sort")) : td.textContent;
  });
});
return [head, rows];
"""


def scenario(now: datetime) -> Scenario:
    """Three sources slow enough that a 200-run page reaches back over several days."""
    return Scenario.model_validate(
        {
            "seed": 11,
            "epoch": now - timedelta(days=4),
            "projects": [
                {
                    "name": "shop",
                    "sources": [
                        {"name": "orders", "runs_per_hour": 2, "failure_rate": 0.2},
                        {"name": "customers", "runs_per_hour": 1},
                    ],
                },
                {"name": "analytics", "sources": [{"name": "events", "runs_per_hour": 3}]},
            ],
        }
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # no network here: no update or sync calls
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and the browser it started
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Sim]]:
    from exporter.httpserver import ThreadedServer
    from exporter.simulator import SimClock, SimulatorApp, World

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = SimClock()
    clock.set(now)
    world = World(scenario(now), clock)
    app = SimulatorApp(world)
    tmp = tmp_path_factory.mktemp("pages")
    with ThreadedServer(app.app) as server:
        sim = Sim(world, server.url, app)
        billing = {"timezone": TZ, "included_rows": {"shop": 5_000_000}, "price_per_1000_rows": 0.5}
        with started(sim, tmp, billing=billing, collector={"interval_seconds": 30}) as run:
            yield run, sim


def load(browser: Any, url: str, status: int = 200) -> None:
    """Open ``url``; the console must stay clean but for the page's own status when it is
    an error on purpose."""
    browser.get(url)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    if status != 200:
        own = f"{url} - Failed to load resource: the server responded with a status of {status}"
        errors = [e for e in errors if not e["message"].startswith(own)]
    assert errors == [], errors


def screenshot(browser: Any, name: str) -> None:
    """The whole page at its width: the window is grown to the page's height first."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    width = browser.get_window_size()["width"]
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(height + 120, 6000))
    browser.save_screenshot(str(SHOTS / f"{name}.png"))
    browser.set_window_size(width, 800)


def report(run: Running, name: str, **params: str) -> list[dict[str, Any]]:
    """The `report` command's answer (over HTTP: `run` holds the file)."""
    args = [f"{k}={v}" for k, v in params.items()]
    done = subprocess.run(
        [EXE, "report", name, "--config", str(run.config), "--format", "json"]
        + [a for arg in args for a in ("--param", arg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def table(browser: Any, selector: str) -> tuple[list[str], list[list[Any]]]:
    head, rows = browser.execute_script(TABLE_JS, selector)
    return head, rows


def apply_filters(browser: Any, expected_in_url: str) -> None:
    """Submit the filter form and wait for the page it loads: reading the old page's charts
    right after the click is a race the browser sometimes wins."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 30).until(
        lambda b: (
            expected_in_url in b.current_url
            and b.find_element(By.TAG_NAME, "html") != old
            and b.execute_script("return document.readyState") == "complete"
        )
    )


def marks(browser: Any) -> dict[str, tuple[int, int]]:
    return {name: (n, labels) for name, n, labels in browser.execute_script(MARKS_JS)}


def today_in(tz: str) -> str:
    return datetime.now(ZoneInfo(tz)).date().isoformat()


def test_usage_page_draws_the_reports_numbers(browser: Any, running: tuple[Running, Sim]) -> None:
    run, _ = running
    load(browser, f"{run.url}/usage")
    drawn = marks(browser)
    assert set(drawn) == {"month", "billable", "status", "failures", "durations"}
    for name, (n, _) in drawn.items():
        assert n > 0, f"chart {name} drew nothing"
    since = (datetime.now(ZoneInfo(TZ)).date() - timedelta(days=89)).isoformat()
    period = {"since": since, "until": today_in(TZ), "tz": TZ}
    assert drawn["billable"][1] == 90  # every day of the period on the axis, empty ones too

    head, rows = table(browser, "#figure-billable table")
    assert head[0] == f"day ({TZ})"
    expected = {
        (r["day"], r["source"]): r["billable_rows"]
        for r in report(run, "usage_by_source_daily", **period)
        if r["billable_rows"]
    }
    shown = {
        (row[0], series): value
        for row in rows
        for series, value in zip(head[1:], row[1:], strict=False)
        if series != "total" and value
    }
    assert shown == expected
    assert drawn["billable"][0] == len(shown)  # one bar segment per number in the table

    head, rows = table(browser, "#figure-status table")
    by_status = {(row[0], s): v for row in rows for s, v in zip(head[1:], row[1:], strict=False)}
    for r in report(run, "runs_by_status_daily", **period):
        assert by_status[(r["day"], r["status"])] == r["runs"]

    head, rows = table(browser, "#figure-failures table")
    health = {(r["project"], r["source"]): r for r in report(run, "source_health", **period)}
    assert {(row[0], row[1]) for row in rows} == set(health)
    for row in rows:
        expected_row = health[(row[0], row[1])]
        assert row[2:] == [expected_row[c] for c in ("runs", "failed", "failure_ratio")]
    head, rows = table(browser, "#figure-durations table")
    assert [row[4] for row in rows] == sorted(
        (health[(row[0], row[1])]["p95_seconds"] for row in rows), reverse=True
    )

    month = report(
        run, "billable_by_source", since=today_in(TZ)[:8] + "01", until=today_in(TZ), tz=TZ
    )
    head, rows = table(browser, "#figure-month table")
    assert head[:5] == ["project", "month to date", "projected month end", "included", "used"]
    for project, to_date, projected, included, used, cost_now, cost_end in rows:
        total = sum(r["billable_rows"] for r in month if r["project"] == project)
        assert to_date == total
        assert projected >= to_date
        assert included == (5_000_000 if project == "shop" else "")
        assert cost_now == round(max(0, total - (included or 0)) * 0.5 / 1000, 2)
        assert cost_end >= cost_now
        if project == "shop":
            assert used == round(total / 5_000_000, 4)
    assert head[5:] == ["cost to date (USD)", "projected cost (USD)"]
    # The same month to date as the billing metrics.
    metrics = scrape(run.url)["synthbrew_billable_rows_month_to_date"]
    for row in rows:
        assert row[1] == sum(v for labels, v in metrics.items() if ("project", row[0]) in labels)
    screenshot(browser, "usage")


def test_period_picker_and_filters_change_the_page(
    browser: Any, running: tuple[Running, Sim]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run, _ = running
    load(browser, f"{run.url}/usage")
    Select(browser.find_element(By.ID, "project")).select_by_value("shop")
    apply_filters(browser, "project=shop")
    assert "project=shop" in browser.current_url  # a link that can be shared
    head, _ = table(browser, "#figure-billable table")
    assert set(head[1:]) == {"shop/orders", "shop/customers", "total"}
    head, rows = table(browser, "#figure-month table")
    assert [row[0] for row in rows] == ["shop"]

    today = today_in(TZ)
    Select(browser.find_element(By.ID, "period")).select_by_value("custom")
    for name in ("since", "until"):
        field = browser.find_element(By.NAME, name)
        assert field.is_enabled()  # the dates are only for a custom period
        browser.execute_script("arguments[0].value = arguments[1]", field, today)
    apply_filters(browser, "period=custom")
    drawn = marks(browser)
    assert drawn["billable"][1] == 1  # one day on the axis
    _, rows = table(browser, "#figure-billable table")
    expected = report(run, "usage_by_source_daily", since=today, until=today, tz=TZ, project="shop")
    assert sum(row[-1] for row in rows) == sum(r["billable_rows"] for r in expected)

    Select(browser.find_element(By.ID, "period")).select_by_value("7d")
    apply_filters(browser, "period=7d")
    assert marks(browser)["billable"][1] == 7


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("project=nope", "no project named 'nope'"),
        ("source=nope", "no source named 'nope'"),
        ("period=custom&since=2026-13-40&until=2026-11-01", "since: '2026-13-40' is not a date"),
        ("period=custom&since=2016-01-01&until=2026-01-01", "a period is at most 366 days"),
        ("period=forever", "period: 'forever' is not one of"),
    ],
)
def test_bad_input_gets_a_message_on_the_page(
    browser: Any, running: tuple[Running, Sim], query: str, message: str
) -> None:
    from selenium.webdriver.common.by import By

    run, _ = running
    answer = httpx.get(f"{run.url}/usage?{query}", timeout=30)
    assert answer.status_code == 400
    assert "Traceback" not in answer.text
    load(browser, f"{run.url}/usage?{query}", status=400)
    assert message in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text


def test_reports_pages(browser: Any, running: tuple[Running, Sim]) -> None:
    from selenium.webdriver.common.by import By

    run, _ = running
    load(browser, f"{run.url}/")
    browser.find_element(By.LINK_TEXT, "Usage and billing")  # the landing page links to it
    screenshot(browser, "landing")
    load(browser, f"{run.url}/reports")
    listed = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, ".reports a")]
    listing = subprocess.run(
        [EXE, "report", "--config", str(run.config)], capture_output=True, text=True, check=True
    )
    names = [line.split()[0] for line in listing.stdout.splitlines() if line[:1] not in ("", " ")]
    assert [href.rsplit("/", 1)[1] for href in listed] == names
    screenshot(browser, "reports")

    since = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    load(browser, f"{run.url}/reports/usage_daily?since={since}")
    assert marks(browser)["report"][0] > 0
    head, rows = table(browser, "#report-table")
    expected = report(run, "usage_daily", since=since)
    assert head == list(expected[0])
    assert [dict(zip(head, row, strict=True)) for row in rows] == expected
    screenshot(browser, "report-usage_daily")

    # The header sorts the table (the library sorts a moment after the click): billable_rows
    # descending, then ascending.
    from selenium.webdriver.support.ui import WebDriverWait

    column = head.index("billable_rows")
    values = [row[column] for row in rows]
    header = browser.find_elements(By.CSS_SELECTOR, "#report-table thead th")[column]
    for order in (sorted(values, reverse=True), sorted(values)):
        header.click()
        WebDriverWait(browser, 5).until(
            lambda _, order=order: [r[column] for r in table(browser, "#report-table")[1]] == order
        )

    since_arg = ["--param", f"since={since}"]
    for fmt in ("csv", "json"):
        download = httpx.get(f"{run.url}/reports/usage_daily.{fmt}?since={since}", timeout=30)
        assert download.status_code == 200
        assert "attachment" in download.headers["content-disposition"]
        cli = subprocess.run(
            [
                EXE,
                "report",
                "usage_daily",
                "--config",
                str(run.config),
                "--format",
                fmt,
                *since_arg,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert download.text == cli.stdout

    load(browser, f"{run.url}/reports/usage_daily?since=yesterday", status=400)
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert "since: 'yesterday' is not a valid date" in alert


def test_pages_fit_a_phone(browser: Any, running: tuple[Running, Sim]) -> None:
    run, _ = running
    browser.set_window_size(390, 844)
    try:
        for path in ("/usage", "/reports/billable_by_source"):
            load(browser, f"{run.url}{path}")
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
            assert all(n > 0 for n, _ in marks(browser).values())
        screenshot(browser, "usage-phone")
    finally:
        browser.set_window_size(1280, 800)


def test_csv_downloads_of_the_usage_figures(running: tuple[Running, Sim]) -> None:
    run, _ = running
    for figure in ("month", "billable", "status", "failures", "durations"):
        answer = httpx.get(f"{run.url}/usage/{figure}.csv?period=30d", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/csv")
        lines = answer.text.splitlines()
        assert len(lines) > 1
    assert httpx.get(f"{run.url}/usage/nothing.csv", timeout=30).status_code == 404
    bad = httpx.get(f"{run.url}/usage/billable.csv?project=nope", timeout=30)
    assert bad.status_code == 400
    assert "no project named 'nope'" in bad.text
