"""Running totals: what /metrics shows, kept up to date in the same transaction as each page.

A scrape reads these few thousand rows instead of aggregating every stored run. Each change of
a stored run (see ``ingest``) is turned into deltas here:

- ``run_totals`` per (project, source, trigger, status): the counters and the duration
  histogram. **Counters never go down.** Every exposed series adds the increases of its own
  value to ``X`` and the decreases to ``X_retracted``: a run stored ``failed`` that comes back
  ``success`` (a retried job) adds 1 to ``runs{status="success"}`` and 1 to
  ``runs_retracted{status="failed"}``; a run whose billable rows are corrected from 500 to 100
  adds 400 to ``billable_rows_retracted``. ``X - X_retracted`` is always the current truth,
  and when no finished run ever changed, ``X_retracted`` is 0 and ``X`` is the plain recount.
  The histogram observes a run's duration each time the run enters a finished (trigger,
  status) with a duration; a later correction of the duration alone is not observed again.
- ``row_totals`` per (project, source, trigger): billable and inserted rows, same rule.
- ``daily_usage`` per (project, source, day in ``billing.timezone``, trigger, status): the
  current truth (it goes down when a run is corrected); month-to-date billing reads only the
  current month of it.
- ``history_stats`` per (project, source, status): runs kept in history, so counts and the
  last-finished gauge need not read it.

:func:`rebuild` recomputes all of them from the stored runs (after the v3 migration, or when
the histogram buckets or the billing timezone change).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from exporter.store.db import registered
from exporter.store.schema import finished

DEFAULT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


@dataclass(frozen=True)
class Rollups:
    """What the totals are built for: the histogram's bounds (seconds) and the calendar."""

    duration_buckets: tuple[float, ...] = DEFAULT_BUCKETS
    timezone: str = "UTC"

    def bounds_ms(self) -> list[int]:
        """A run falls in bucket ``le`` when ``durationMs <= int(le * 1000)``."""
        return [int(b * 1000) for b in self.duration_buckets]

    def bucket_counts(self, duration: str, where: str = "true") -> str:
        """SQL for the cumulative bucket counts of ``duration`` over a group, as a list."""
        parts = ", ".join(
            f"count(*) FILTER (WHERE ({where}) AND {duration} <= {ms})" for ms in self.bounds_ms()
        )
        return f"[{parts}]::BIGINT[]"


# Changed runs of ``staged`` (see ``ingest``) with a stored copy; keys as text, billing days.
_CHANGES = """
SELECT project_id::VARCHAR, source_id::VARCHAR, trigger, status, is_finished,
       CAST(timezone($tz, finished_at) AS DATE), duration_ms, billable_rows, total_inserted_rows,
       old_project_id::VARCHAR, old_source_id::VARCHAR, old_trigger, old_status, was_finished,
       CAST(timezone($tz, old_finished_at) AS DATE), old_duration_ms, old_billable_rows,
       old_total_inserted_rows
FROM staged WHERE changed AND was_stored
"""


def _new_runs(rollups: Rollups) -> str:
    """The rule for runs stored for the first time, grouped in SQL: a first poll or a burst makes
    every run of a batch new, and each finished one only adds to the series it enters."""
    return f"""
    SELECT project_id::VARCHAR, source_id::VARCHAR, trigger, status,
           CAST(timezone($tz, finished_at) AS DATE), count(*), count(duration_ms),
           coalesce(sum(duration_ms), 0), {rollups.bucket_counts("duration_ms")},
           sum(billable_rows), sum(total_inserted_rows)
    FROM staged WHERE changed AND NOT was_stored AND is_finished GROUP BY ALL
    """


class Copy(NamedTuple):
    """What of one copy of a run the totals depend on."""

    project_id: str
    source_id: str
    trigger: str
    status: str
    finished: bool
    day: Any
    duration_ms: int | None
    billable_rows: int
    inserted_rows: int


@dataclass
class Deltas:
    """Increases and decreases per series, from one batch of changed runs."""

    runs: dict[tuple[str, ...], list[int]]
    rows: dict[tuple[str, ...], list[int]]
    daily: dict[tuple[Any, ...], list[int]]


def deltas(changes: Iterable[tuple[Copy, Copy]], bounds_ms: Sequence[int]) -> Deltas:
    """The documented rule (module docstring), run by run: ``old`` is the stored copy, ``new``
    the copy replacing it. (A new run, with no stored copy, only enters its series: see
    ``_add_new_runs``.)"""
    runs: dict[tuple[str, ...], list[int]] = {}
    rows: dict[tuple[str, ...], list[int]] = {}
    daily: dict[tuple[Any, ...], list[int]] = {}
    # runs, runs_retracted, duration_count, duration_sum_ms, then the cumulative buckets
    empty_run = [0, 0, 0, 0, *([0] * len(bounds_ms))]
    for old, new in changes:
        was, now = _series(old), _series(new)
        # runs: a run enters one series and leaves another
        if now.run != was.run:
            if now.run is not None:
                runs.setdefault(now.run, empty_run.copy())[0] += 1
            if was.run is not None:
                runs.setdefault(was.run, empty_run.copy())[1] += 1
        # histogram: observed on entering a series with a duration
        if now.observed is not None and now.observed != was.observed:
            duration = new.duration_ms or 0
            series = runs.setdefault(now.observed, empty_run.copy())
            series[2] += 1
            series[3] += duration
            for i, bound in enumerate(bounds_ms, start=4):
                series[i] += duration <= bound
        # billable and inserted rows: each series' value changes up or down
        for key in {k for k in (was.rows, now.rows) if k is not None}:
            before = (old.billable_rows, old.inserted_rows) if key == was.rows else (0, 0)
            after = (new.billable_rows, new.inserted_rows) if key == now.rows else (0, 0)
            series = rows.setdefault(key, [0, 0, 0, 0])
            for i, change in enumerate((after[0] - before[0], after[1] - before[1])):
                series[2 * i] += max(change, 0)
                series[2 * i + 1] += max(-change, 0)
        # daily usage: the current truth, so simply the old copy out and the new one in
        for copy, sign in ((old, -1), (new, 1)):
            if copy.finished and copy.day is not None:
                day_key = (copy.project_id, copy.source_id, copy.day, copy.trigger, copy.status)
                day = daily.setdefault(day_key, [0, 0, 0])
                day[0] += sign
                day[1] += sign * copy.billable_rows
                day[2] += sign * copy.inserted_rows
    return Deltas(runs, rows, daily)


def _add_new_runs(found: Deltas, groups: Iterable[tuple[Any, ...]], buckets: int) -> None:
    """Add the grouped new runs of ``_new_runs`` to ``found``: what ``deltas`` gives each of
    them with no stored copy, summed."""
    for p, s, trigger, status, day, runs, observed, sum_ms, counts, billable, inserted in groups:
        series = found.runs.setdefault((p, s, trigger, status), [0] * (4 + buckets))
        series[0] += runs
        series[2] += observed
        series[3] += sum_ms
        for i, count in enumerate(counts, start=4):
            series[i] += count
        rows = found.rows.setdefault((p, s, trigger), [0, 0, 0, 0])
        rows[0] += billable
        rows[2] += inserted
        if day is not None:
            usage = found.daily.setdefault((p, s, day, trigger, status), [0, 0, 0])
            usage[0] += runs
            usage[1] += billable
            usage[2] += inserted


class _Series(NamedTuple):
    """The series a copy of a run counts in; None where it counts in none."""

    run: tuple[str, str, str, str] | None
    observed: tuple[str, str, str, str] | None
    rows: tuple[str, str, str] | None


_NONE = _Series(None, None, None)


def _series(copy: Copy) -> _Series:
    if not copy.finished:
        return _NONE
    run = (copy.project_id, copy.source_id, copy.trigger, copy.status)
    observed = run if copy.duration_ms is not None else None
    return _Series(run, observed, (copy.project_id, copy.source_id, copy.trigger))


def _table(names: Sequence[str], series: dict[Any, list[Any]]) -> pa.Table:
    """Series keys and values as an Arrow table with the given column names."""
    columns = zip(*(list(k) + v for k, v in series.items()), strict=True)
    return pa.table(dict(zip(names, (list(c) for c in columns), strict=True)))


_RUN_COLUMNS = (
    "p",
    "s",
    "trigger",
    "status",
    "runs",
    "runs_retracted",
    "duration_count",
    "duration_sum_ms",
    "duration_buckets",
)
_RUN_MERGE = """
MERGE INTO run_totals t USING (
    SELECT p::UUID AS project_id, s::UUID AS source_id, trigger, status, runs, runs_retracted,
           duration_count, duration_sum_ms, duration_buckets
    FROM deltas
) d ON t.project_id = d.project_id AND t.source_id = d.source_id AND t.trigger = d.trigger
    AND t.status = d.status
WHEN MATCHED THEN UPDATE SET
    runs = t.runs + d.runs,
    runs_retracted = t.runs_retracted + d.runs_retracted,
    duration_count = t.duration_count + d.duration_count,
    duration_sum_ms = t.duration_sum_ms + d.duration_sum_ms,
    duration_buckets = list_transform(
        list_zip(t.duration_buckets, d.duration_buckets), lambda x: x[1] + x[2])
WHEN NOT MATCHED THEN INSERT VALUES (d.project_id, d.source_id, d.trigger, d.status, d.runs,
    d.runs_retracted, d.duration_count, d.duration_sum_ms, d.duration_buckets)
"""
_ROW_COLUMNS = ("p", "s", "trigger", "bill_up", "bill_down", "ins_up", "ins_down")
_ROW_MERGE = """
MERGE INTO row_totals t USING (
    SELECT p::UUID AS project_id, s::UUID AS source_id, trigger,
           bill_up, bill_down, ins_up, ins_down
    FROM deltas
) d ON t.project_id = d.project_id AND t.source_id = d.source_id AND t.trigger = d.trigger
WHEN MATCHED THEN UPDATE SET
    billable_rows = t.billable_rows + d.bill_up,
    billable_rows_retracted = t.billable_rows_retracted + d.bill_down,
    inserted_rows = t.inserted_rows + d.ins_up,
    inserted_rows_retracted = t.inserted_rows_retracted + d.ins_down
WHEN NOT MATCHED THEN INSERT VALUES (d.project_id, d.source_id, d.trigger,
    d.bill_up, d.bill_down, d.ins_up, d.ins_down)
"""
_DAILY_COLUMNS = ("p", "s", "day", "trigger", "status", "runs", "billable_rows", "inserted_rows")
_DAILY_MERGE = """
MERGE INTO daily_usage t USING (
    SELECT p::UUID AS project_id, s::UUID AS source_id, day, trigger, status,
           runs, billable_rows, inserted_rows
    FROM deltas
) d ON t.project_id = d.project_id AND t.source_id = d.source_id AND t.day = d.day
    AND t.trigger = d.trigger AND t.status = d.status
WHEN MATCHED AND t.runs + d.runs = 0 THEN DELETE
WHEN MATCHED THEN UPDATE SET
    runs = t.runs + d.runs,
    billable_rows = t.billable_rows + d.billable_rows,
    inserted_rows = t.inserted_rows + d.inserted_rows
WHEN NOT MATCHED THEN INSERT VALUES (d.project_id, d.source_id, d.day, d.trigger, d.status,
    d.runs, d.billable_rows, d.inserted_rows)
"""


def apply_changes(conn: duckdb.DuckDBPyConnection, rollups: Rollups) -> None:
    """Fold the changed rows of the ``staged`` table (see ``ingest``) into the totals.

    New runs are summed per series in SQL. Runs that replace a stored copy are few per batch
    (a run finishing, a correction), and the rule runs over them in Python, where its cases
    read plainly. Each total then takes one MERGE."""
    tz = {"tz": rollups.timezone}
    changes = [(Copy(*row[9:]), Copy(*row[:9])) for row in conn.execute(_CHANGES, tz).fetchall()]
    found = deltas(changes, rollups.bounds_ms())
    _add_new_runs(
        found, conn.execute(_new_runs(rollups), tz).fetchall(), len(rollups.duration_buckets)
    )
    buckets_apart = {k: [*v[:4], v[4:]] for k, v in found.runs.items()}
    _merge(conn, _RUN_MERGE, _RUN_COLUMNS, buckets_apart)
    _merge(conn, _ROW_MERGE, _ROW_COLUMNS, found.rows)
    _merge(conn, _DAILY_MERGE, _DAILY_COLUMNS, {k: v for k, v in found.daily.items() if any(v)})


def _merge(
    conn: duckdb.DuckDBPyConnection, sql: str, columns: Sequence[str], series: dict[Any, Any]
) -> None:
    if series:
        with registered(conn, deltas=_table(columns, series)):
            conn.execute(sql)


# --- built from the stored runs -----------------------------------------------------------------


def _recount_runs(rollups: Rollups) -> str:
    return f"""
    SELECT project_id, source_id, trigger, status, count(*) AS runs, 0 AS runs_retracted,
           count(duration_ms) AS duration_count, coalesce(sum(duration_ms), 0) AS duration_sum_ms,
           {rollups.bucket_counts("duration_ms")} AS duration_buckets
    FROM events WHERE {finished()} GROUP BY ALL
    """


_RECOUNT_ROWS = f"""
SELECT project_id, source_id, trigger, sum(billable_rows), 0, sum(total_inserted_rows), 0
FROM events WHERE {finished()} GROUP BY ALL
"""
_RECOUNT_DAILY = f"""
SELECT project_id, source_id, CAST(timezone($tz, finished_at) AS DATE) AS day, trigger, status,
       count(*), sum(billable_rows), sum(total_inserted_rows)
FROM events WHERE {finished()} AND finished_at IS NOT NULL GROUP BY ALL ORDER BY day
"""
RECOUNT_HISTORY_STATS = f"""
SELECT project_id, source_id, status, count(*), count(*) FILTER (WHERE stale_since IS NOT NULL),
       max(finished_at) FILTER (WHERE {finished()})
FROM events_history GROUP BY ALL
"""

SETTINGS_KEYS = ("duration_buckets", "timezone")


def stored_rollups(conn: duckdb.DuckDBPyConnection) -> Rollups | None:
    """What the totals were last built for; None when they never were (or, read-only, in a
    database from before the totals)."""
    try:
        rows = dict(conn.execute("SELECT key, value FROM store_settings").fetchall())
    except duckdb.CatalogException:
        return None
    if not all(k in rows for k in SETTINGS_KEYS):
        return None
    return Rollups(tuple(json.loads(rows["duration_buckets"])), rows["timezone"])


def calendar_timezone(conn: duckdb.DuckDBPyConnection) -> str | None:
    """The timezone ``daily_usage`` is kept in; None in a database from before it."""
    built = stored_rollups(conn)
    return built.timezone if built else None


def _save(conn: duckdb.DuckDBPyConnection, rollups: Rollups) -> None:
    values = (json.dumps(list(rollups.duration_buckets)), rollups.timezone)
    for key, value in zip(SETTINGS_KEYS, values, strict=True):
        conn.execute(
            "INSERT OR REPLACE INTO store_settings VALUES ($k, $v)", {"k": key, "v": value}
        )


def rebuild(conn: duckdb.DuckDBPyConnection, rollups: Rollups) -> None:
    """Recompute every total from the stored runs (one pass over history). The counters then
    equal the recount: what a v2 database, which had no running totals, exposed."""
    for table in ("run_totals", "row_totals", "daily_usage", "history_stats"):
        conn.execute(f"DELETE FROM {table}")
    conn.execute(f"INSERT INTO run_totals {_recount_runs(rollups)}")
    conn.execute(f"INSERT INTO row_totals {_RECOUNT_ROWS}")
    conn.execute(f"INSERT INTO daily_usage {_RECOUNT_DAILY}", {"tz": rollups.timezone})
    conn.execute(f"INSERT INTO history_stats {RECOUNT_HISTORY_STATS}")
    _save(conn, rollups)


def adapt(conn: duckdb.DuckDBPyConnection, built: Rollups, wanted: Rollups) -> None:
    """Move the totals from ``built`` to ``wanted`` with as little rework as possible.

    A new billing timezone re-days ``daily_usage`` (a gauge: recomputed). New histogram bounds
    keep the counters monotonic: a bound that existed keeps at least its old count, a new one
    takes the recount, and counts never fall going up the bounds.
    """
    if wanted.timezone != built.timezone:
        conn.execute("DELETE FROM daily_usage")
        conn.execute(f"INSERT INTO daily_usage {_RECOUNT_DAILY}", {"tz": wanted.timezone})
    if wanted.duration_buckets != built.duration_buckets:
        _rebucket(conn, built, wanted)
    _save(conn, wanted)


_KEY = ["project_id", "source_id", "trigger", "status"]


def _rebucket(conn: duckdb.DuckDBPyConnection, built: Rollups, wanted: Rollups) -> None:
    recount = {
        tuple(row[:4]): row[4]
        for row in conn.execute(
            f"""SELECT project_id, source_id, trigger, status,
                       {wanted.bucket_counts("duration_ms")}
                FROM events WHERE {finished()} AND duration_ms IS NOT NULL GROUP BY ALL"""
        ).fetchall()
    }
    rows = conn.execute(f"SELECT {', '.join(_KEY)}, duration_buckets FROM run_totals").fetchall()
    old_at = {b: i for i, b in enumerate(built.duration_buckets)}
    merged = []
    for *key, old in rows:
        fresh = recount.get(tuple(key), [0] * len(wanted.duration_buckets))
        counts, floor = [], 0
        for bound, count in zip(wanted.duration_buckets, fresh, strict=True):
            kept = old[old_at[bound]] if bound in old_at else 0
            floor = max(floor, count, kept)
            counts.append(floor)
        merged.append((*key, counts))
    table = pa.table(
        {
            **{k: [str(m[i]) for m in merged] for i, k in enumerate(_KEY)},
            "buckets": pa.array([m[4] for m in merged], pa.list_(pa.int64())),
        }
    )
    with registered(conn, rebucketed=table):
        conn.execute(
            """UPDATE run_totals t SET duration_buckets = r.buckets FROM rebucketed r
                WHERE t.project_id = r.project_id::UUID AND t.source_id = r.source_id::UUID
                  AND t.trigger = r.trigger AND t.status = r.status"""
        )
