"""What the rest of the exporter reads back: poll state, each source's last window, the running
totals, counts and the gauges of runs now in flight. Each reads ``events_live`` and small tables
only, except :func:`windows`, which reaches into history for a source whose last window is
older than what live keeps (a quiet source), and only as far back as that window starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, groupby, islice
from operator import itemgetter
from typing import Any
from uuid import UUID

import duckdb

from exporter.models import PROGRESS_FIELDS, SourceKey, fingerprint
from exporter.store.schema import HISTORY_BY_TIME, finished, in_flight
from exporter.window import Window


@dataclass(frozen=True)
class PollState:
    project_id: UUID
    source_id: UUID
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_outcome: str | None
    last_error_reason: str | None
    last_error_message: str | None
    page_limit: int | None
    interval_seconds: float | None
    successful_polls: int


def poll_states(cur: duckdb.DuckDBPyConnection) -> dict[SourceKey, PollState]:
    rows = cur.execute(
        """SELECT project_id, source_id, last_poll_at, last_success_at, last_outcome,
                  last_error_reason, last_error_message, page_limit, interval_seconds,
                  successful_polls
           FROM poll_state"""
    ).fetchall()
    return {(r[0], r[1]): PollState(*r) for r in rows}


def run_counts(cur: duckdb.DuckDBPyConnection) -> dict[SourceKey, int]:
    """Stored runs per source: live ones counted, history's from ``history_stats``."""
    rows = cur.execute(
        """SELECT project_id, source_id, sum(n) FROM (
               SELECT project_id, source_id, count(*) AS n FROM events_live GROUP BY ALL
               UNION ALL
               SELECT project_id, source_id, sum(runs) FROM history_stats GROUP BY ALL
           ) GROUP BY ALL"""
    ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def table_sizes(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Runs in ``live`` and ``history`` (history's count comes from its statistics)."""
    live = cur.execute("SELECT count(*) FROM events_live").fetchall()[0][0]
    kept = cur.execute("SELECT coalesce(sum(runs), 0) FROM history_stats").fetchall()[0][0]
    return {"live": int(live), "history": int(kept)}


def duckdb_memory(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """DuckDB's own memory by what holds it (its buffer pool, indexes, hash tables ...)."""
    rows = cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
    return {str(tag): int(n) for tag, n in rows}


def in_progress(cur: duckdb.DuckDBPyConnection) -> dict[tuple[SourceKey, str], int]:
    """Runs now queued or active, stale ones excluded. They are all live."""
    rows = cur.execute(
        f"""SELECT project_id, source_id, status, count(*) FROM events_live
            WHERE {in_flight()} AND stale_since IS NULL GROUP BY ALL"""
    ).fetchall()
    return {((r[0], r[1]), r[2]): int(r[3]) for r in rows}


def stale_runs(cur: duckdb.DuckDBPyConnection) -> dict[SourceKey, int]:
    """Runs flagged stale, live or retired."""
    rows = cur.execute(
        """SELECT project_id, source_id, sum(n) FROM (
               SELECT project_id, source_id, count(*) AS n FROM events_live
               WHERE stale_since IS NOT NULL AND finished_at IS NULL GROUP BY ALL
               UNION ALL
               SELECT project_id, source_id, sum(stale_runs) FROM history_stats GROUP BY ALL
           ) GROUP BY ALL HAVING sum(n) > 0"""
    ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


# The running totals (see ``totals``), as /metrics reads them.


@dataclass(frozen=True)
class RunTotal:
    source: SourceKey
    trigger: str
    status: str
    runs: int
    runs_retracted: int
    duration_count: int
    duration_sum_seconds: float
    duration_buckets: tuple[int, ...]


@dataclass(frozen=True)
class RowTotal:
    source: SourceKey
    trigger: str
    billable_rows: int
    billable_rows_retracted: int
    inserted_rows: int
    inserted_rows_retracted: int


def run_totals(cur: duckdb.DuckDBPyConnection) -> list[RunTotal]:
    rows = cur.execute(
        """SELECT project_id, source_id, trigger, status, runs, runs_retracted, duration_count,
                  duration_sum_ms / 1000.0, duration_buckets
           FROM run_totals ORDER BY ALL"""
    ).fetchall()
    return [
        RunTotal((r[0], r[1]), r[2], r[3], r[4], r[5], r[6], float(r[7]), tuple(r[8])) for r in rows
    ]


def row_totals(cur: duckdb.DuckDBPyConnection) -> list[RowTotal]:
    rows = cur.execute(
        """SELECT project_id, source_id, trigger, billable_rows, billable_rows_retracted,
                  inserted_rows, inserted_rows_retracted
           FROM row_totals ORDER BY ALL"""
    ).fetchall()
    return [RowTotal((r[0], r[1]), r[2], *(int(v) for v in r[3:])) for r in rows]


def billable_between(
    cur: duckdb.DuckDBPyConnection, first_day: Any, end_day: Any
) -> dict[SourceKey, int]:
    """Billable rows of runs finished on days ``[first_day, end_day)`` (billing calendar)."""
    rows = cur.execute(
        """SELECT project_id, source_id, sum(billable_rows) FROM daily_usage
           WHERE day >= $first AND day < $end GROUP BY ALL""",
        {"first": first_day, "end": end_day},
    ).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


def last_finished(cur: duckdb.DuckDBPyConnection) -> dict[tuple[SourceKey, str], datetime]:
    """``finishedAt`` of the newest finished run per source and status: live runs, plus the
    newest kept per key in ``history_stats``."""
    rows = cur.execute(
        f"""SELECT project_id, source_id, status, max(newest) FROM (
                SELECT project_id, source_id, status, max(finished_at) AS newest FROM events_live
                WHERE {finished()} AND finished_at IS NOT NULL GROUP BY ALL
                UNION ALL
                SELECT project_id, source_id, status, last_finished_at FROM history_stats
                WHERE last_finished_at IS NOT NULL
            ) GROUP BY ALL"""
    ).fetchall()
    return {((r[0], r[1]), r[2]): r[3] for r in rows}


# GenerationEvent.fingerprint's parts, as DuckDB can hand them over cheaply: ints, not datetimes.
_FINGERPRINT = ", ".join(
    [
        "epoch_us(coalesce(updated_at, created_at))",
        *(f"epoch_us({c})" if c.endswith("_at") else c for c in PROGRESS_FIELDS),
    ]
)
_RUN = f"replace(id::VARCHAR, '-', ''), {_FINGERPRINT}"
# Each source's candidate runs, newest first, with how many its next poll asks for: live ones,
# and for a quiet source whose last window reaches further back than live keeps, the history
# runs from that window's oldest on (a few hundred per source). Python keeps the first ``keep``:
# a window function (QUALIFY row_number()) partitions per thread and alone needs more than a
# 32MB memory_limit at 100 million stored runs; a sort of the candidates does not.
_WINDOWS = f"""
WITH limits AS (
    SELECT project_id, source_id, least($n, coalesce(page_limit, $n)) AS keep, window_start
    FROM poll_state WHERE source_id IN (SELECT unnest($sources::UUID[]))
),
candidates AS (
    SELECT project_id, source_id, id, queued_at, {_RUN} FROM events_live
    WHERE source_id IN (SELECT unnest($sources::UUID[]))
    UNION ALL
    SELECT h.project_id, h.source_id, h.id, h.queued_at, {_RUN.replace("id::", "h.id::")}
    FROM {HISTORY_BY_TIME} h JOIN limits l USING (project_id, source_id)
    -- $oldest, a constant, lets zone maps skip the history no window of the batch reaches
    WHERE l.window_start IS NOT NULL AND h.queued_at >= l.window_start AND h.queued_at >= $oldest
)
SELECT c.project_id::VARCHAR, c.source_id::VARCHAR, coalesce(l.keep, $n),
       c.* EXCLUDE (project_id, source_id, id, queued_at)
FROM candidates c LEFT JOIN limits l USING (project_id, source_id)
ORDER BY 1, 2, c.queued_at DESC, c.id
"""
# Every source with a window: those polled before, and any with live runs.
_WINDOW_SOURCES = """
SELECT source_id, min(window_start) FROM (
    SELECT source_id, window_start FROM poll_state
    UNION ALL
    SELECT DISTINCT source_id, NULL FROM events_live
) GROUP BY source_id ORDER BY 2 NULLS LAST, 1
"""


def windows(
    cur: duckdb.DuckDBPyConnection, per_source: int, sources_per_query: int = 200
) -> dict[SourceKey, Window]:
    """Each source's newest stored runs: the window a restarted poller compares its first
    pages with.

    As many per source as its next poll asks for (its stored ``page_limit``, at most
    ``per_source``), exactly what the poller keeps between polls. Sources are read
    ``sources_per_query`` at a time, those whose windows reach furthest back together, and
    rows in chunks, so Python never holds more than one source's rows. Ids come as hex text
    (``UUID.int`` without building UUIDs); DuckDB hands UHUGEINTs to Python 70x slower.
    """
    out = {}
    sources = cur.execute(_WINDOW_SOURCES).fetchall()
    never = datetime.max.replace(tzinfo=UTC)
    for i in range(0, len(sources), sources_per_query):
        batch = sources[i : i + sources_per_query]
        oldest = min((start for _, start in batch if start is not None), default=never)
        params = {"n": per_source, "sources": [s for s, _ in batch], "oldest": oldest}
        rows = _chunked(cur.execute(_WINDOWS, params))
        for (project_id, source_id), group in groupby(rows, itemgetter(0, 1)):
            first = next(group)
            out[(UUID(project_id), UUID(source_id))] = Window(
                (int(row[3], 16), fingerprint(*row[4:]))
                for row in islice(chain([first], group), first[2])
            )
    return out


def _chunked(result: duckdb.DuckDBPyConnection, size: int = 10_000) -> Iterator[tuple[Any, ...]]:
    """A result's rows, fetched ``size`` at a time rather than all at once."""
    while rows := result.fetchmany(size):
        yield from rows


def export_fingerprints(cur: duckdb.DuckDBPyConnection) -> dict[tuple[UUID, UUID, str], str]:
    rows = cur.execute("SELECT project_id, source_id, month, fingerprint FROM export_state")
    return {(r[0], r[1], r[2]): r[3] for r in rows.fetchall()}
