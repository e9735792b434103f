"""Upgrading a database written by the previous release (schema v2) in place.

The v2 file is built with v2's own schema (its migrations are kept verbatim) and filled the way
v2 stored runs. What v2 exposed was a recount of its ``events`` table on every scrape; after
the upgrade every one of those values must be exposed unchanged, every run kept, and every
named report must answer exactly as before.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import duckdb
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from exporter.billing import current_month
from exporter.config import BillingConfig
from exporter.metrics import SourceNames, store_metrics
from exporter.models import SourceKey
from exporter.reports import ReportError, load_reports, run_report
from exporter.store import MIGRATIONS, Rollups, Store, page_table
from exporter.store.schema import FINISHED_PER_DAY, PERCENTILES_BY_SOURCE
from tests.factories import FINISHED, run

NOW = datetime.now(UTC).replace(microsecond=0)
BUCKETS = (1.0, 10.0, 60.0, 600.0)
PROJECT = uuid4()
BUSY, QUIET, GONE = uuid4(), uuid4(), uuid4()  # GONE: no longer configured
NAMES = {
    (PROJECT, BUSY): SourceNames("shop", "busy"),
    (PROJECT, QUIET): SourceNames("shop", "quiet"),
}


def runs_of_a_year() -> list[Any]:
    """A busy source (several hundred runs in hours), a quiet one (one a day for a year) and
    an unconfigured one; finished, failed, cancelled, unknown, in flight, across months."""
    rng = random.Random(7)
    out = []
    for source, count, spacing in (
        (BUSY, 350, timedelta(minutes=2)),
        (QUIET, 365, timedelta(days=1)),
        (GONE, 20, timedelta(hours=5)),
    ):
        for i in range(count):
            queued = NOW - spacing * (i + 1)
            status = rng.choice(["success"] * 6 + ["failed", "cancelled", "paused"])
            finished = queued + timedelta(seconds=rng.randint(1, 900))
            fields: dict[str, Any] = {
                "sourceId": str(source),
                "projectId": str(PROJECT),
                "trigger": rng.choice(["populate", "populate", "regenerate"]),
                "status": status,
                "queuedAt": queued.isoformat(),
                "createdAt": queued.isoformat(),
                "startedAt": queued.isoformat(),
                "finishedAt": None if status == "paused" else finished.isoformat(),
                "updatedAt": finished.isoformat(),
                "durationMs": None if status == "paused" else rng.randint(100, 900_000),
                "billableRows": rng.randint(0, 10_000),
                "totalInsertedRows": rng.randint(0, 10_000),
                "errorMessage": "boom" if status == "failed" else None,
            }
            if i < 3 and source == BUSY:
                fields.update(
                    status=rng.choice(["queued", "active"]), finishedAt=None, durationMs=None
                )
            out.append(run(**fields))
    return out


def build_v2(path: Path) -> None:
    conn = duckdb.connect(str(path))
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    for version, sql in enumerate(MIGRATIONS[:2], start=1):
        assert isinstance(sql, str)
        conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", [version])
    events = runs_of_a_year()
    table = page_table(events)
    stale = [e.id for e in events if e.status in ("queued", "active")][:1]
    conn.register("page", table)
    conn.execute(
        """INSERT INTO events SELECT id::UUID, project_id::UUID, source_id::UUID, team_id::UUID,
               schema_version_id::UUID, slug, trigger, status, queued_at, started_at, finished_at,
               duration_ms, total_inserted_rows, billable_rows, error_message, metadata::JSON,
               extra::JSON, created_at, updated_at, $now, $now, NULL
           FROM page""",
        {"now": NOW},
    )
    conn.execute(
        "UPDATE events SET stale_since = $now WHERE id = $id", {"now": NOW, "id": stale[0]}
    )
    conn.execute(
        """INSERT INTO poll_state (project_id, source_id, last_poll_at, last_success_at,
               last_outcome, page_limit, interval_seconds, successful_polls)
           VALUES ($p, $s, $now, $now, 'success', 200, 60, 12)""",
        {"p": PROJECT, "s": BUSY, "now": NOW},
    )
    names = pa.table(
        {
            "p": [str(PROJECT)] * 2,
            "s": [str(BUSY), str(QUIET)],
            "pn": ["shop", "shop"],
            "sn": ["busy", "quiet"],
        }
    )
    conn.register("names", names)
    conn.execute("INSERT INTO sources SELECT p::UUID, s::UUID, pn, sn, true FROM names")
    conn.close()


def v2_exposed(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, frozenset[Any]], float]:
    """What the v2 exporter showed: its metrics, recounted from ``events`` as it did."""
    out: dict[tuple[str, frozenset[Any]], float] = {}

    def put(name: str, key: SourceKey, value: float, **labels: str) -> None:
        names = NAMES.get(key)
        if names is not None:
            out[
                (
                    name,
                    frozenset({"project": names.project, "source": names.source, **labels}.items()),
                )
            ] = value

    per_trigger: dict[tuple[Any, ...], list[int]] = {}
    for p, s, trigger, status, n, bill, ins in conn.execute(
        f"""SELECT project_id, source_id, trigger, status, count(*), sum(billable_rows),
                   sum(total_inserted_rows) FROM events WHERE {FINISHED} GROUP BY ALL"""
    ).fetchall():
        put("synthbrew_generation_runs_total", (p, s), n, trigger=trigger, status=status)
        sums = per_trigger.setdefault((p, s, trigger), [0, 0, 0])
        sums[0] += n if status == "failed" else 0
        sums[1] += bill
        sums[2] += ins
    for (p, s, trigger), (failed, bill, ins) in per_trigger.items():
        put("synthbrew_generation_failures_total", (p, s), failed, trigger=trigger)
        put("synthbrew_generation_billable_rows_total", (p, s), bill, trigger=trigger)
        put("synthbrew_generation_inserted_rows_total", (p, s), ins, trigger=trigger)
    filters = ", ".join(f"count(*) FILTER (WHERE duration_ms <= {int(b * 1000)})" for b in BUCKETS)
    for p, s, trigger, status, *counts, total, seconds in conn.execute(
        f"""SELECT project_id, source_id, trigger, status, {filters}, count(*),
                   sum(duration_ms) / 1000.0
            FROM events WHERE {FINISHED} AND duration_ms IS NOT NULL GROUP BY ALL"""
    ).fetchall():
        series = {"trigger": trigger, "status": status}
        name = "synthbrew_generation_duration_seconds"
        for bound, count in zip(BUCKETS, counts, strict=True):
            put(f"{name}_bucket", (p, s), count, le=str(bound), **series)
        put(f"{name}_bucket", (p, s), total, le="+Inf", **series)
        put(f"{name}_count", (p, s), total, **series)
        put(f"{name}_sum", (p, s), seconds, **series)
    for p, s, status, n in conn.execute(
        """SELECT project_id, source_id, status, count(*) FROM events
           WHERE finished_at IS NULL AND status IN ('queued', 'active') AND stale_since IS NULL
           GROUP BY ALL"""
    ).fetchall():
        put("synthbrew_generation_in_progress", (p, s), n, status=status)
    for p, s, n in conn.execute(
        """SELECT project_id, source_id, count(*) FROM events
           WHERE stale_since IS NOT NULL AND finished_at IS NULL GROUP BY ALL"""
    ).fetchall():
        put("synthbrew_generation_stale_runs", (p, s), n)
    for p, s, status, at in conn.execute(
        f"""SELECT project_id, source_id, status, epoch(max(finished_at)) FROM events
            WHERE {FINISHED} AND finished_at IS NOT NULL GROUP BY ALL"""
    ).fetchall():
        put("synthbrew_generation_last_finished_timestamp_seconds", (p, s), at, status=status)
    month = current_month(NOW, "UTC")
    for p, s, bill in conn.execute(
        f"""SELECT project_id, source_id, sum(billable_rows) FROM events
            WHERE {FINISHED} AND finished_at >= $start AND finished_at < $end GROUP BY ALL""",
        {"start": month.start, "end": month.end},
    ).fetchall():
        put("synthbrew_billable_rows_month_to_date", (p, s), bill)
    return out


# Columns that follow the wall clock, so differ between two runs of the same report.
CLOCK_COLUMNS = {"minutes_since_queued"}


def answers(conn: duckdb.DuckDBPyConnection) -> dict[str, list[Any]]:
    """Every named report over the last 400 days (where it takes a start), as records without
    the columns that follow the clock."""
    out = {}
    for name, report in load_reports().items():
        since = {"since": "today-400"} if any(p.name == "since" for p in report.params) else {}
        records = run_report(conn, report, report.bind(since)).records()
        out[name] = [{k: v for k, v in r.items() if k not in CLOCK_COLUMNS} for r in records]
    return out


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("v2") / "synthbrew.duckdb"
    build_v2(path)
    conn = duckdb.connect(str(path))
    conn.execute("SET TimeZone = 'UTC'")
    # What the reports answer from v2's runs: the new reports, with no rollup to take from
    # and the macros of later versions.
    conn.execute(
        """CREATE TEMP TABLE daily_usage (project_id UUID, source_id UUID, day DATE,
               trigger VARCHAR, status VARCHAR, runs BIGINT, billable_rows HUGEINT,
               inserted_rows HUGEINT)"""
    )
    conn.execute(FINISHED_PER_DAY.replace("CREATE MACRO", "CREATE TEMP MACRO"))
    conn.execute(PERCENTILES_BY_SOURCE.replace("CREATE OR REPLACE MACRO", "CREATE TEMP MACRO"))
    before = {
        "runs": conn.execute("SELECT * FROM events ORDER BY id").fetchall(),
        "poll_state": conn.execute("SELECT * FROM poll_state ORDER BY ALL").fetchall(),
        "exposed": v2_exposed(conn),
        "reports": answers(conn),
    }
    conn.close()
    store = Store(path, rollups=Rollups(BUCKETS))
    try:
        registry = CollectorRegistry()
        registry.register(store_metrics(store, NAMES, BillingConfig(), now=lambda: NOW))
        after = {
            "version": store.schema_version(),
            "tables": dict(
                store.cursor()
                .execute("SELECT table_name, table_type FROM information_schema.tables")
                .fetchall()
            ),
            "live": store.cursor().execute("SELECT count(*) FROM events_live").fetchall()[0][0],
            "runs": store.cursor().execute("SELECT * FROM events ORDER BY id").fetchall(),
            "poll_state": store.cursor()
            .execute("SELECT * EXCLUDE (window_start) FROM poll_state ORDER BY ALL")
            .fetchall(),
            "exposed": {
                (s.name, frozenset(s.labels.items())): s.value
                for f in registry.collect()
                for s in f.samples
            },
            "reports": answers(store.cursor()),
        }
    finally:
        store.close()
    return {"before": before, "after": after}


def test_the_schema_is_current_and_the_old_table_is_gone(upgraded: dict[str, Any]) -> None:
    after = upgraded["after"]
    assert after["version"] == len(MIGRATIONS) == 5
    assert after["tables"]["events"] == "VIEW"
    assert after["tables"]["events_live"] == "BASE TABLE"
    assert after["tables"]["events_history"] == "BASE TABLE"
    assert 0 < after["live"] < 350, "the busy source's newest runs and those in flight"


def test_every_run_and_poll_state_is_kept(upgraded: dict[str, Any]) -> None:
    before, after = upgraded["before"], upgraded["after"]
    assert len(before["runs"]) == 735
    assert after["runs"] == before["runs"]
    assert after["poll_state"] == before["poll_state"]


def test_every_metric_value_is_what_v2_exposed(upgraded: dict[str, Any]) -> None:
    before, after = upgraded["before"]["exposed"], upgraded["after"]["exposed"]
    assert len(before) > 100
    for key, value in before.items():
        assert key in after, key
        assert after[key] == pytest.approx(value), key
    retracted = [v for (name, _), v in after.items() if "_retracted_total" in name]
    assert retracted, "the new series are there"
    assert not any(retracted), "nothing was ever retracted"


def test_every_report_answers_as_before(upgraded: dict[str, Any]) -> None:
    before, after = upgraded["before"]["reports"], upgraded["after"]["reports"]
    assert before.keys() == after.keys()
    for name in before:
        assert sorted(map(repr, after[name])) == sorted(map(repr, before[name])), name
    assert any(before.values()), "the reports found something"


def test_a_v2_file_read_before_its_upgrade_answers_or_says_why(tmp_path: Path) -> None:
    """``report`` opens the file read-only, so it cannot upgrade it: reports over the runs
    answer, those that need what v3 added say what to do."""
    path = tmp_path / "v2.duckdb"
    build_v2(path)
    store = Store(path, read_only=True)
    reports = load_reports()
    try:
        assert store.schema_version() == 2
        failures = reports["failure_rate"]
        assert run_report(store.cursor(), failures, failures.bind({"since": "today-400"})).rows
        monthly = reports["usage_monthly"]
        with pytest.raises(ReportError, match="older release: `run` or `collect` upgrades it"):
            run_report(store.cursor(), monthly, monthly.bind({}))
    finally:
        store.close(checkpoint=False)
