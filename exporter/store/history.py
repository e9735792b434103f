"""Moving runs that can no longer change from ``events_live`` to ``events_history``.

A run stays live while it is in flight (and not flagged stale), or while it is both among its
source's newest ``LIVE_PER_SOURCE`` runs and younger than ``LIVE_MAX_AGE``. Everything else is
*retired*: appended to history in ``queued_at`` order and deleted from live, in one transaction.
Because what retires is about ``LIVE_MAX_AGE`` old (or younger, for busy sources), consecutive
appends are consecutive in time and history stays sorted without ever being rewritten.

A retired run that shows up again changed (a failed run retried a month later, a stale run
that finally finished) is found by id *and* ``queued_at`` — which a run keeps for life — so the
lookup reads only the row groups of its own time, and it moves back to live (see ``ingest``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta

import duckdb

from exporter.store.schema import (
    HISTORY_BY_TIME,
    LIVE_MAX_AGE,
    LIVE_PER_SOURCE,
    finished,
    in_flight,
)

_STAYS_LIVE = f"""
SELECT e.id FROM {{table}} e
LEFT JOIN (
    SELECT project_id, source_id, list_min(max(queued_at, $keep)) AS cutoff
    FROM {{table}} GROUP BY ALL HAVING count(*) > $keep
) newest USING (project_id, source_id)
WHERE ({in_flight("e.")} AND e.stale_since IS NULL)
   OR (e.queued_at >= $young AND (newest.cutoff IS NULL OR e.queued_at >= newest.cutoff))
"""

_ADD_TO_HISTORY_STATS = f"""
MERGE INTO history_stats t USING (
    SELECT project_id, source_id, status, count(*) AS runs,
           count(*) FILTER (WHERE stale_since IS NOT NULL) AS stale_runs,
           max(finished_at) FILTER (WHERE {finished()}) AS last_finished_at
    FROM {{rows}} GROUP BY ALL
) d ON t.project_id = d.project_id AND t.source_id = d.source_id AND t.status = d.status
WHEN MATCHED THEN UPDATE SET
    runs = t.runs + d.runs,
    stale_runs = t.stale_runs + d.stale_runs,
    last_finished_at = greatest(t.last_finished_at, d.last_finished_at)
WHEN NOT MATCHED THEN INSERT VALUES (d.project_id, d.source_id, d.status, d.runs,
    d.stale_runs, d.last_finished_at)
"""


def split_into_live_and_history(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """The v3 migration: every run of ``table`` goes to live or history, as ``retire`` would
    have placed it; each source's window start is taken from its newest runs."""
    conn.execute(
        f"CREATE TEMP TABLE staying AS {_STAYS_LIVE.format(table=table)}",
        _params(_now(conn), LIVE_PER_SOURCE, LIVE_MAX_AGE),
    )
    conn.execute(f"INSERT INTO events_live SELECT * FROM {table} SEMI JOIN staying USING (id)")
    conn.execute(
        f"""INSERT INTO events_history SELECT * FROM {table} ANTI JOIN staying USING (id)
            ORDER BY queued_at, id"""
    )
    conn.execute("DROP TABLE staying")
    conn.execute(
        f"""UPDATE poll_state s SET window_start = w.start FROM (
                SELECT project_id, source_id, list_min(max(queued_at, $keep)) AS start
                FROM {table} GROUP BY ALL
            ) w WHERE s.project_id = w.project_id AND s.source_id = w.source_id""",
        {"keep": LIVE_PER_SOURCE},
    )


def retire(
    conn: duckdb.DuckDBPyConnection,
    now: datetime,
    keep: int = LIVE_PER_SOURCE,
    max_age: timedelta = LIVE_MAX_AGE,
) -> int:
    """Move the live runs that can no longer change to history; returns how many moved.

    Call it inside a transaction. The ``staying`` set is at most ``keep`` runs per source plus
    the runs in flight, whatever the history size.
    """
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE retiring AS
            SELECT id FROM events_live ANTI JOIN ({_STAYS_LIVE.format(table="events_live")})
            USING (id)""",
        _params(now, keep, max_age),
    )
    moved = int(conn.execute("SELECT count(*) FROM retiring").fetchall()[0][0])
    if moved:
        leaving = "(SELECT * FROM events_live SEMI JOIN retiring USING (id))"
        conn.execute(f"INSERT INTO events_history {leaving} ORDER BY queued_at, id")
        conn.execute(_ADD_TO_HISTORY_STATS.format(rows=leaving))
        conn.execute(
            f"""INSERT OR REPLACE INTO store_settings
                SELECT 'history_newest', greatest(max(queued_at), $known)::VARCHAR
                FROM {leaving}""",
            {"known": newest(conn)},
        )
        conn.execute("DELETE FROM events_live WHERE id IN (SELECT id FROM retiring)")
    conn.execute("DROP TABLE retiring")
    return moved


def newest(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """At least the newest ``queued_at`` in history (a revived run may have left it): a run
    queued later cannot be there. Kept in ``store_settings``, found once if missing."""
    rows = conn.execute(
        "SELECT value::TIMESTAMPTZ FROM store_settings WHERE key = 'history_newest'"
    ).fetchall()
    if rows:
        value: datetime | None = rows[0][0]
        return value
    found: datetime | None = conn.execute("SELECT max(queued_at) FROM events_history").fetchall()[
        0
    ][0]
    if found is not None:
        conn.execute(
            "INSERT OR REPLACE INTO store_settings VALUES ('history_newest', $v::VARCHAR)",
            {"v": found},
        )
    return found


_REMOVE_FROM_HISTORY_STATS = """
MERGE INTO history_stats t USING (
    SELECT old_project_id AS project_id, old_source_id AS source_id, old_status AS status,
           count(*) AS runs, count(*) FILTER (WHERE old_stale_since IS NOT NULL) AS stale_runs
    FROM staged WHERE was_stored AND NOT is_live GROUP BY ALL
) d ON t.project_id = d.project_id AND t.source_id = d.source_id AND t.status = d.status
WHEN MATCHED THEN UPDATE SET runs = t.runs - d.runs, stale_runs = t.stale_runs - d.stale_runs
"""
# The keys whose newest finished run in history left it with a revived run: the next newest
# must be found, if the key still has runs there. For any other key it stays what it was.
_LEFT_KEYS = """
SELECT DISTINCT s.old_project_id, s.old_source_id, s.old_status, t.last_finished_at
FROM staged s JOIN history_stats t ON t.project_id = s.old_project_id
    AND t.source_id = s.old_source_id AND t.status = s.old_status
WHERE s.was_stored AND NOT s.is_live AND t.runs > 0 AND s.old_finished_at >= t.last_finished_at
"""
# The days (billing calendar) with finished runs of a key in a range, newest first: every run
# in history with a finished_at is counted in daily_usage on the day it finished, within a day
# of it in UTC. daily_usage grows by days in day order, so zone maps keep this to the range.
_DAYS = """
SELECT day FROM daily_usage
WHERE day BETWEEN $since AND $until
  AND project_id = $p AND source_id = $s AND status = $status AND runs > 0
GROUP BY day ORDER BY day DESC
"""
# Days tried in the first range: what is left of a key in history is usually close behind the
# finish that left it, so a year of daily_usage is read only when nothing is.
_NEAR_DAYS = 31


def _days(
    conn: duckdb.DuckDBPyConnection, key: dict[str, object], left: datetime
) -> Iterator[date]:
    """The days that may hold the key's newest finish still in history, newest first: none
    after the day of the finish that left (``left``, UTC; a day later in the billing calendar
    at most), the month before that first."""
    until = left.date() + timedelta(days=1)
    since = until - timedelta(days=_NEAR_DAYS)
    for lo, hi in ((since, until), (date.min, since - timedelta(days=1))):
        for (day,) in conn.execute(_DAYS, {**key, "since": lo, "until": hi}).fetchall():
            yield day


# The newest finish among the runs that may lie on that day: history is (nearly) in time order,
# so finished_at's zone maps skip all but a few days of it. Days are tried newest first, so the
# first found is the newest: a run of a newer day would have been found first, one of an older
# day that is not in this band finished before it.
_NEWEST_ON = f"""
SELECT max(finished_at) FROM {HISTORY_BY_TIME}
WHERE project_id = $p AND source_id = $s AND status = $status AND {finished()}
  AND finished_at >= $day - INTERVAL 1 DAY AND finished_at < $day + INTERVAL 2 DAY
"""


def _find_last_finished_again(conn: duckdb.DuckDBPyConnection) -> None:
    """Set ``last_finished_at`` of each key whose newest finished run a revived run took out of
    history to the next newest, reading a few days of history per day tried, the newest days
    first, rather than every run of the key (1.2 s at 100 million stored runs). The days tried
    before the one found are those whose runs are all live (revived ones, mostly)."""
    for p, s, status, left in conn.execute(_LEFT_KEYS).fetchall():
        key = {"p": p, "s": s, "status": status}
        newest = None
        for day in _days(conn, key, left):
            newest = conn.execute(_NEWEST_ON, {**key, "day": day}).fetchall()[0][0]
            if newest is not None:
                break
        conn.execute(
            """UPDATE history_stats SET last_finished_at = $newest
               WHERE project_id = $p AND source_id = $s AND status = $status""",
            {**key, "newest": newest},
        )


def revive(conn: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Take the runs of ``staged`` that were found in history out of it and correct
    ``history_stats``. A changed run is then written to live with the page's copy; an unchanged
    one (a stale run back in the window) goes back with its stored copy, seen now. A key's
    next newest finish is found through ``daily_usage``, which counts every stored run."""
    conn.execute(
        f"""INSERT INTO events_live BY NAME
            SELECT h.* REPLACE ($now AS last_seen_at, NULL AS stale_since)
            FROM {HISTORY_BY_TIME} h JOIN staged s ON h.id = s.id AND h.queued_at = s.old_queued_at
            WHERE s.was_stored AND NOT s.is_live AND NOT s.changed""",
        {"now": now},
    )
    # A DELETE scans the table itself, its columns in the order the statement names them:
    # queued_at goes first so that it is checked first (see HISTORY_BY_TIME; on a test table
    # the other order kept the id column's metadata of every row group, 2.14 MB against 0.57).
    conn.execute(
        """DELETE FROM events_history h USING staged s
           WHERE h.queued_at = s.old_queued_at AND h.id = s.id AND s.was_stored AND NOT s.is_live"""
    )
    conn.execute(_REMOVE_FROM_HISTORY_STATS)
    _find_last_finished_again(conn)
    conn.execute("DELETE FROM history_stats WHERE runs = 0")


def _now(conn: duckdb.DuckDBPyConnection) -> datetime:
    value: datetime = conn.execute("SELECT now()").fetchall()[0][0]
    return value


def _params(now: datetime, keep: int, max_age: timedelta) -> dict[str, object]:
    return {"keep": keep, "young": now - max_age}
