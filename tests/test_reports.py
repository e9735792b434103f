"""Every bundled report on a database filled from the simulator, against values computed
independently from the simulator's ground truth."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.models import GenerationEvent
from exporter.report_output import render
from exporter.reports import (
    CONTEXT,
    Report,
    ReportError,
    ReportFailed,
    ReportResult,
    load_reports,
    parse_report,
    run_report,
)
from exporter.store import Store
from exporter.targets import targets
from tests.factories import EPOCH, PROJECT, T0, make_scenario, target
from tests.factories import run as factory_run
from tests.runners import Sim, running

REPORTS = load_reports()
SCENARIO = [
    {"name": "orders", "runs_per_hour": 30, "failure_rate": 0.2, "duration_seconds": 300},
    {
        "name": "billing",
        "runs_per_hour": 12,
        "failure_rate": 0.1,
        "queue_wait_seconds": 30,
        "regenerate_share": 0.5,
    },
]
# The frozen instant: 26 hours after the epoch, so runs span two calendar days.
NOW = EPOCH.replace(day=2, hour=14)
WIDE = {"since": "2026-01-01", "until": "2026-12-31"}


@pytest.fixture
async def filled(start_sim: Callable[..., Sim], tmp_path: Path) -> tuple[Sim, Path]:
    sim = start_sim(make_scenario(SCENARIO), now=NOW)
    db = tmp_path / "x.duckdb"
    async with running(sim, db) as (c, store, _):
        store.sync_sources([(t.project.id, t.source.id, *t.labels) for t in targets(c.config)])
        for name in ("orders", "billing"):
            assert (await c.poll(target(c, name))).ok
    return sim, db


def events(sim: Sim) -> list[dict[str, Any]]:
    """What the exporter saw: each source's newest 200 runs at the frozen instant."""
    out = []
    for source in ("orders", "billing"):
        state = sim.state("shop", source)
        for spec in sim.world.runs(state, NOW, 200):
            e = sim.world.event(state, spec, NOW)
            e["source"] = source
            out.append(e)
    return out


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def finished(e: dict[str, Any]) -> bool:
    return e["status"] in ("success", "failed") or e["finishedAt"] is not None


def quantile(values: list[float], p: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


_ROUNDED = 0.0005 + 1e-9  # the reports round to 3 decimals


def assert_percentile(got: float, values: list[float], p: float) -> None:
    """``got`` is the p-quantile of ``values`` (interpolated as ``quantile``) to within what
    ``percentiles_by_source`` promises: its buckets' spread, under 4.1 % of 1 ms + |value| of
    the larger neighbouring rank, and the reports' rounding to the millisecond."""
    xs = sorted(values)
    k = (len(xs) - 1) * p
    near = max(abs(xs[math.floor(k)]), abs(xs[math.ceil(k)]))
    assert got == pytest.approx(quantile(values, p), abs=0.0409 * (0.001 + near) + _ROUNDED), p


@pytest.fixture
def run(filled: tuple[Sim, Path]) -> Iterator[Callable[..., list[dict[str, Any]]]]:
    store = Store(filled[1], read_only=True)

    def go(name: str, **params: str) -> list[dict[str, Any]]:
        report = REPORTS[name]
        return run_report(store.cursor(), report, report.bind(params)).records()

    yield go
    store.close(checkpoint=False)


def test_every_report_is_declared_properly() -> None:
    assert {
        "usage_daily",
        "usage_monthly",
        "billable_by_source",
        "failure_rate",
        "duration_percentiles",
        "slowest_runs",
        "recent_failures",
        "queue_wait",
        "stuck_runs",
    } <= set(REPORTS)
    for report in REPORTS.values():
        assert report.title
        assert report.description
        used = set(re.findall(r"\$(\w+)", report.sql)) - set(CONTEXT)
        assert used == {p.name for p in report.params}, report.name


def test_usage_daily(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in events(filled[0]):
        if finished(e):
            day = ts(e["finishedAt"]).date().isoformat()  # type: ignore[union-attr]
            sums = expected[("shop", day)]
            sums[0] += 1
            sums[1] += e["billableRows"]
            sums[2] += e["totalInsertedRows"]
    got = {
        (r["project"], r["day"]): [r["runs"], r["billable_rows"], r["inserted_rows"]]
        for r in run("usage_daily", **WIDE)
    }
    assert len(got) == 2, "two calendar days"
    assert got == expected


def test_usage_daily_honours_the_timezone(
    filled: tuple[Sim, Path], run: Callable[..., Any]
) -> None:
    utc = run("usage_daily", **WIDE)
    tokyo = run("usage_daily", **WIDE, tz="Asia/Tokyo")
    assert sum(r["runs"] for r in utc) == sum(r["runs"] for r in tokyo)
    assert [r["day"] for r in utc] != [r["day"] for r in tokyo]


def test_usage_monthly_and_billable_by_source(
    filled: tuple[Sim, Path], run: Callable[..., Any]
) -> None:
    done = [e for e in events(filled[0]) if finished(e)]
    [month] = run("usage_monthly", **WIDE)
    assert month == {
        "project": "shop",
        "month": "2026-11",
        "runs": len(done),
        "billable_rows": sum(e["billableRows"] for e in done),
        "inserted_rows": sum(e["totalInsertedRows"] for e in done),
    }
    by_source = {r["source"]: r for r in run("billable_by_source", **WIDE)}
    total = sum(e["billableRows"] for e in done)
    for source in ("orders", "billing"):
        rows = sum(e["billableRows"] for e in done if e["source"] == source)
        assert by_source[source]["billable_rows"] == rows
        assert by_source[source]["share"] == pytest.approx(round(rows / total, 4))


def test_failure_rate(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in events(filled[0]):
        if finished(e):
            counts[(e["source"], e["trigger"])][0] += 1
            counts[(e["source"], e["trigger"])][1] += e["status"] == "failed"
    got = {(r["source"], r["trigger"]): r for r in run("failure_rate", since="2026-01-01")}
    assert got.keys() == counts.keys()
    for key, (runs, failed) in counts.items():
        assert (got[key]["runs"], got[key]["failed"]) == (runs, failed)
        assert got[key]["failure_rate"] == pytest.approx(round(failed / runs, 4))


def test_duration_percentiles(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    got = {r["source"]: r for r in run("duration_percentiles", since="2026-01-01")}
    for source in ("orders", "billing"):
        durations = [
            e["durationMs"] / 1000
            for e in events(filled[0])
            if finished(e) and e["source"] == source
        ]
        row = got[source]
        assert row["runs"] == len(durations)
        for p, col in ((0.5, "p50_seconds"), (0.95, "p95_seconds"), (0.99, "p99_seconds")):
            assert_percentile(row[col], durations, p)
        assert row["max_seconds"] == pytest.approx(max(durations), abs=0.001)


def test_slowest_runs(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    done = sorted((e for e in events(filled[0]) if finished(e)), key=lambda e: -e["durationMs"])
    got = run("slowest_runs", since="2026-01-01", limit="5")
    assert [r["id"] for r in got] == [e["id"] for e in done[:5]]
    assert got[0]["duration_seconds"] == pytest.approx(done[0]["durationMs"] / 1000, abs=0.001)


def test_recent_failures(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    failed = sorted(
        (e for e in events(filled[0]) if e["status"] == "failed"),
        key=lambda e: e["finishedAt"],
        reverse=True,
    )
    got = run("recent_failures", limit="3", since="2026-01-01")
    assert [r["id"] for r in got] == [e["id"] for e in failed[:3]]
    assert all(r["error_message"] for r in got)
    newest = ts(failed[0]["finishedAt"])
    assert newest is not None
    since = (newest + timedelta(days=1)).date().isoformat()
    assert run("recent_failures", since=since) == []


def test_queue_wait(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    got = {r["source"]: r for r in run("queue_wait", since="2026-01-01")}
    for source in ("orders", "billing"):
        waits = [
            (ts(e["startedAt"]) - ts(e["queuedAt"])).total_seconds()  # type: ignore[operator]
            for e in events(filled[0])
            if e["startedAt"] and e["source"] == source
        ]
        assert got[source]["runs"] == len(waits)
        assert_percentile(got[source]["p50_seconds"], waits, 0.5)
        assert got[source]["max_seconds"] == pytest.approx(max(waits), abs=0.001)


@pytest.fixture(scope="module")
def spread_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store for every example below: each example writes its runs under a new source."""
    store = Store(tmp_path_factory.mktemp("spread") / "x.duckdb")
    yield store
    store.close()


# Durations and waits as the percentile reports meet them: ties, zeros and negative waits,
# neighbours in one bucket (1000 and 1010 ms) and in the next (1040, 1050), spreads of many
# doublings.
_MS = st.one_of(
    st.integers(0, 3).map(lambda x: x * 10),
    st.sampled_from([1000, 1010, 1040, 1050, 60_000, 60_010]),
    st.integers(0, 10**6).map(lambda x: x * 10),
)


def _source_runs(values: list[tuple[int, int]]) -> tuple[UUID, list[GenerationEvent]]:
    """A new source's finished runs: (duration ms, queue wait ms) each."""
    source = uuid4()
    runs = []
    for i, (duration, wait) in enumerate(values):
        queued = T0 + timedelta(minutes=i)
        runs.append(
            factory_run(
                minutes=i,
                sourceId=str(source),
                durationMs=duration,
                startedAt=(queued + timedelta(milliseconds=wait)).isoformat(),
            )
        )
    return source, runs


def _row_of(cur: duckdb.DuckDBPyConnection, name: str, source: UUID) -> dict[str, Any]:
    """The one row of report ``name`` (over all of 2026) for a source stored without names."""
    report = REPORTS[name]
    records = run_report(cur, report, report.bind({"since": "2026-01-01"})).records()
    (row,) = [r for r in records if r["source"] == str(source)]
    return row


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(_MS, st.one_of(_MS, st.integers(-300, 0).map(lambda x: x * 10))),
        min_size=1,
        max_size=80,
    )
)
def test_the_percentile_reports_hold_their_bound(
    spread_store: Store, values: list[tuple[int, int]]
) -> None:
    source, runs = _source_runs(values)
    spread_store.ingest_page(PROJECT, source, runs, now=T0)
    cur = spread_store.cursor()
    durations = [d / 1000 for d, _ in values]
    waits = [w / 1000 for _, w in values]
    row = _row_of(cur, "duration_percentiles", source)
    assert row["runs"] == len(values)
    for p, col in ((0.5, "p50_seconds"), (0.95, "p95_seconds"), (0.99, "p99_seconds")):
        assert_percentile(row[col], durations, p)
    assert row["max_seconds"] == pytest.approx(max(durations), abs=_ROUNDED)
    row = _row_of(cur, "queue_wait", source)
    assert row["runs"] == len(values)
    for p, col in ((0.5, "p50_seconds"), (0.95, "p95_seconds")):
        assert_percentile(row[col], waits, p)
    assert row["max_seconds"] == pytest.approx(max(waits), abs=_ROUNDED)


def test_the_percentile_reports_are_exact_where_no_two_values_share_a_bucket(
    tmp_path: Path,
) -> None:
    """Values more than 4.1 % apart each have a bucket of their own, which holds the value."""
    store = Store(tmp_path / "x.duckdb")
    durations = [round(1000 * 1.05**i) for i in range(40)]  # 1.000 s to 6.7 s, 5 % apart
    source, runs = _source_runs([(d, d // 10) for d in durations])
    store.ingest_page(PROJECT, source, runs, now=T0)
    row = _row_of(store.cursor(), "duration_percentiles", source)
    store.close()
    seconds = [d / 1000 for d in durations]
    for p, col in ((0.5, "p50_seconds"), (0.95, "p95_seconds"), (0.99, "p99_seconds")):
        assert row[col] == pytest.approx(round(quantile(seconds, p), 3), abs=1e-9), col


def test_the_percentile_reports_count_a_source_replaced_under_the_same_names_once(
    tmp_path: Path,
) -> None:
    """As every report does: sources are named, and one replaced by a new id keeps its row."""
    store = Store(tmp_path / "x.duckdb")
    (old, old_runs), (new, new_runs) = (
        _source_runs([(1000, 0), (2000, 0)]),
        _source_runs([(9000, 0)]),
    )
    store.sync_sources([(PROJECT, old, "shop", "orders"), (PROJECT, new, "shop", "orders")])
    store.ingest_page(PROJECT, old, old_runs, now=T0)
    store.ingest_page(PROJECT, new, new_runs, now=T0)
    report = REPORTS["duration_percentiles"]
    rows = run_report(store.cursor(), report, report.bind({"since": "2026-01-01"})).records()
    store.close()
    assert rows == [
        {
            "project": "shop",
            "source": "orders",
            "runs": 3,
            "p50_seconds": 2.0,
            "p95_seconds": 8.3,
            "p99_seconds": 8.86,
            "max_seconds": 9.0,
        }
    ]


def test_stuck_runs(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    in_progress = {e["id"] for e in events(filled[0]) if e["status"] in ("queued", "active")}
    assert in_progress, "the frozen instant has runs in flight"
    got = run("stuck_runs", older_than_minutes="60")
    # The simulator's clock is frozen weeks before the real one, so every unfinished run is old.
    assert {r["id"] for r in got} == in_progress


def test_usage_by_source_daily_names_the_top_sources_and_sums_the_rest(
    filled: tuple[Sim, Path], run: Callable[..., Any]
) -> None:
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for e in events(filled[0]):
        if finished(e):
            day = ts(e["finishedAt"]).date().isoformat()  # type: ignore[union-attr]
            expected[(day, f"shop/{e['source']}")] += e["billableRows"]
    both = {
        (r["day"], r["source"]): r["billable_rows"] for r in run("usage_by_source_daily", **WIDE)
    }
    assert both == expected
    totals = defaultdict(int)
    for (_, source), rows in expected.items():
        totals[source] += rows
    top = max(totals, key=lambda s: totals[s])
    one = run("usage_by_source_daily", **WIDE, top="1")
    assert {r["source"] for r in one} == {top, "other"}
    assert sum(r["billable_rows"] for r in one) == sum(expected.values())
    only = run("usage_by_source_daily", **WIDE, source="orders")
    assert {r["source"] for r in only} == {"shop/orders"}


def test_runs_by_status_daily_and_source_health(
    filled: tuple[Sim, Path], run: Callable[..., Any]
) -> None:
    by_status: dict[tuple[str, str], int] = defaultdict(int)
    durations: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events(filled[0]):
        if finished(e):
            day = ts(e["finishedAt"]).date().isoformat()  # type: ignore[union-attr]
            by_status[(day, e["status"])] += 1
            counts[e["source"]][0] += 1
            counts[e["source"]][1] += e["status"] == "failed"
            if e["durationMs"] is not None:
                durations[e["source"]].append(e["durationMs"])
    got = {(r["day"], r["status"]): r["runs"] for r in run("runs_by_status_daily", **WIDE)}
    assert got == by_status
    health = {r["source"]: r for r in run("source_health", **WIDE)}
    for source, (runs, failed) in counts.items():
        assert (health[source]["runs"], health[source]["failed"]) == (runs, failed)
        assert health[source]["failure_ratio"] == pytest.approx(round(failed / runs, 4))
        # The nearest-rank percentile (quantile_disc's: the ceil(n * p)-th value) read from its
        # log bucket: at most e^0.02 (2.02 %) off, then rounded to the millisecond.
        ordered = sorted(durations[source])
        for column, percent in (("p50_seconds", 50), ("p95_seconds", 95)):
            exact = ordered[max(1, -(-len(ordered) * percent // 100)) - 1]
            assert health[source][column] * 1000 == pytest.approx(exact, rel=0.0203, abs=0.5)


def test_a_relative_date_too_far_back_is_a_message_not_a_crash() -> None:
    with pytest.raises(ReportError, match="--param since: 'today-999999999' is not a valid date"):
        REPORTS["usage_daily"].bind({"since": "today-999999999"})


def test_a_report_the_database_cannot_run_now_is_not_the_users_mistake(tmp_path: Path) -> None:
    """Out of memory is ReportFailed (HTTP 503, exit 1), a broken query ReportError (400, 2)."""
    big = tmp_path / "big.sql"
    big.write_text("-- title: Big\nSELECT list(i) FROM range(3000000) t(i)\n", encoding="utf-8")
    broken = tmp_path / "broken.sql"
    broken.write_text("-- title: Broken\nSELECT no_such_column FROM range(3)\n", encoding="utf-8")
    conn = duckdb.connect()
    conn.execute("SET memory_limit = '2MB'")
    conn.execute("SET temp_directory = ''")
    with pytest.raises(ReportFailed, match="report 'big' failed: Out of Memory") as failed:
        run_report(conn, parse_report(big), {})
    with pytest.raises(ReportError, match="report 'broken' failed") as refused:
        run_report(conn, parse_report(broken), {})
    assert (failed.value.http_status, failed.value.exit_code) == (503, 1)
    assert (refused.value.http_status, refused.value.exit_code) == (400, 2)


def test_csv_cells_a_spreadsheet_would_run_get_an_apostrophe() -> None:
    result = ReportResult(["message", "n"], [("=HYPERLINK(1)", -5), ("-oops", 1), ("fine", 2)])
    lines = render(result, "csv").splitlines()
    assert lines[1:] == ["'=HYPERLINK(1),-5", "'-oops,1", "fine,2"]


def test_params_are_typed_and_checked() -> None:
    report = REPORTS["slowest_runs"]
    bound = report.bind({"limit": "7", "since": "today-3"}, today=date(2026, 11, 22))
    assert bound == {"since": date(2026, 11, 19), "limit": 7}
    assert report.bind({"since": "month_start"}, today=date(2026, 11, 22))["since"] == date(
        2026, 11, 1
    )
    with pytest.raises(ReportError, match="--param limit: 'many' is not a valid int"):
        report.bind({"limit": "many"})
    with pytest.raises(ReportError, match="no such parameter"):
        report.bind({"limt": "1"})
    with pytest.raises(ReportError, match="not a valid tz"):
        REPORTS["usage_daily"].bind({"tz": "Mars/Olympus"})


def test_a_parameter_cannot_inject_sql(filled: tuple[Sim, Path], run: Callable[..., Any]) -> None:
    rows = run("usage_daily", since="2026-01-01", until="2026-12-31", tz="UTC")
    with pytest.raises(ReportError):
        run("usage_daily", tz="UTC'); DROP TABLE events; --")
    assert run("usage_daily", since="2026-01-01", until="2026-12-31", tz="UTC") == rows


def test_render_formats(filled: tuple[Sim, Path]) -> None:
    store = Store(filled[1], read_only=True)
    try:
        report = REPORTS["failure_rate"]
        result = run_report(store.cursor(), report, report.bind({"since": "2026-01-01"}))
    finally:
        store.close(checkpoint=False)
    csv_text = render(result, "csv")
    assert csv_text.splitlines()[0] == "project,source,trigger,runs,failed,failure_rate"
    assert len(csv_text.splitlines()) == len(result.rows) + 1
    assert '"failure_rate":' in render(result, "json").replace(" ", "")
    assert "failure_rate" in render(result, "table", "Failure rate")


def test_header_without_title_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("-- description: no title\nSELECT 1;\n")
    with pytest.raises(ReportError, match="title"):
        parse_report(bad)


# Too much for an 8MB pool, nothing for a 48MB one: what a report over all of a large history
# is beside a batch of writes holding the rest of the pool.
_HUNGRY = Report(
    name="hungry",
    title="Hungry",
    description="Groups more keys than a small pool holds.",
    sql="SELECT count(*) AS groups FROM "
    "(SELECT i % 400000 AS k, count(*) FROM range(2000000) t(i) GROUP BY k)",
)


def test_a_report_that_ran_out_of_memory_is_run_again_once_the_pool_has_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "x.duckdb")
    try:
        store.set_memory_limit("8MB")
        warned = threading.Event()

        class Watch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "ran out of memory" in record.getMessage():
                    warned.set()

        watch = Watch()
        logging.getLogger("exporter.reports").addHandler(watch)
        try:
            answer: list[Any] = []
            worker = threading.Thread(
                target=lambda: answer.append(
                    run_report(store.cursor(), _HUNGRY, {}, retry_seconds=(5.0,))
                )
            )
            worker.start()
            assert warned.wait(30), "the first try did not run out of memory"
            store.set_memory_limit("48MB")  # the batch beside it ended
            worker.join(30)
        finally:
            logging.getLogger("exporter.reports").removeHandler(watch)
        assert len(answer) == 1, "the worker did not return"
        assert answer[0].rows == [(400000,)]
        assert "trying again in 5 s" in caplog.text
    finally:
        store.close()


def test_a_report_still_out_of_memory_after_its_retries_is_unavailable(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.duckdb")
    try:
        store.set_memory_limit("8MB")
        with pytest.raises(ReportFailed, match="Out of Memory"):
            run_report(store.cursor(), _HUNGRY, {}, retry_seconds=(0.01, 0.01))
        store.set_memory_limit("48MB")
        assert run_report(store.cursor(), _HUNGRY, {}, retry_seconds=()).rows == [(400000,)]
    finally:
        store.close()
