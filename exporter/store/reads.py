"""What the rest of the exporter reads back: poll state, each source's last window, counts and
the gauges of runs now in flight. Each reads ``events_live`` and small tables only, except
:func:`windows`, which reaches into history for a source whose last window is older than what
live keeps (a quiet source), and only as far back as that window starts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Any
from uuid import UUID

import duckdb

from exporter.models import PROGRESS_FIELDS, fingerprint
from exporter.store.schema import in_flight
from exporter.window import Window

SourceKey = tuple[UUID, UUID]


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


# GenerationEvent.fingerprint's parts, as DuckDB can hand them over cheaply: ints, not datetimes.
_FINGERPRINT = ", ".join(
    [
        "epoch_us(coalesce(updated_at, created_at))",
        *(f"epoch_us({c})" if c.endswith("_at") else c for c in PROGRESS_FIELDS),
    ]
)
_RUN = f"replace(id::VARCHAR, '-', ''), queued_at, {_FINGERPRINT}"
_LIVE_WINDOWS = f"""
SELECT project_id::VARCHAR, source_id::VARCHAR, {_RUN}
FROM (
    SELECT e.*, least($n, coalesce(s.page_limit, $n)) AS keep
    FROM events_live e LEFT JOIN poll_state s USING (project_id, source_id)
    WHERE e.source_id IN (SELECT unnest($sources::UUID[]))
    QUALIFY row_number() OVER (
        PARTITION BY e.project_id, e.source_id ORDER BY e.queued_at DESC, e.id
    ) <= keep
)
ORDER BY project_id, source_id
"""
# The part of a quiet source's last window that already went to history: from the window's
# oldest run up to what live still holds.
_HISTORY_WINDOWS = f"""
SELECT project_id::VARCHAR, source_id::VARCHAR, {_RUN}
FROM events_history h JOIN poll_state s USING (project_id, source_id)
WHERE s.window_start IS NOT NULL AND h.queued_at >= s.window_start
ORDER BY 1, 2
"""


def windows(
    cur: duckdb.DuckDBPyConnection, per_source: int, sources_per_query: int = 250
) -> dict[SourceKey, Window]:
    """Each source's newest stored runs: the window a restarted collector compares its first
    pages with.

    As many per source as its next poll asks for (its stored ``page_limit``, at most
    ``per_source``), exactly what the collector keeps between polls. Sources are read
    ``sources_per_query`` at a time, rows in chunks, to bound DuckDB's memory. Ids come as hex
    text (``UUID.int`` without building UUIDs); DuckDB hands UHUGEINTs to Python 70x slower.
    """
    limits = dict(
        ((r[0], r[1]), min(per_source, r[2] or per_source))
        for r in cur.execute("SELECT project_id, source_id, page_limit FROM poll_state").fetchall()
    )
    runs: dict[SourceKey, list[tuple[Any, ...]]] = defaultdict(list)
    for rows in (_history_window_rows(cur), _live_window_rows(cur, per_source, sources_per_query)):
        for (project_id, source_id), group in groupby(rows, itemgetter(0, 1)):
            runs[(UUID(project_id), UUID(source_id))].extend(r[2:] for r in group)
    out = {}
    for key, found in runs.items():
        # newest first by queued_at, then id, as the live query ranks them
        found.sort(key=lambda r: (-r[1].timestamp(), r[0]))
        keep = found[: limits.get(key, per_source)]
        out[key] = Window((int(r[0], 16), fingerprint(*r[2:])) for r in keep)
    return out


def _live_window_rows(
    cur: duckdb.DuckDBPyConnection, per_source: int, sources_per_query: int
) -> Iterator[tuple[Any, ...]]:
    sources = cur.execute("SELECT DISTINCT source_id FROM events_live ORDER BY 1").fetchall()
    for i in range(0, len(sources), sources_per_query):
        batch = [str(row[0]) for row in sources[i : i + sources_per_query]]
        yield from _chunked(cur.execute(_LIVE_WINDOWS, {"n": per_source, "sources": batch}))


def _history_window_rows(cur: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    yield from _chunked(cur.execute(_HISTORY_WINDOWS))


def _chunked(result: duckdb.DuckDBPyConnection, size: int = 10_000) -> Iterator[tuple[Any, ...]]:
    """A result's rows, fetched ``size`` at a time rather than all at once."""
    while rows := result.fetchmany(size):
        yield from rows


def export_fingerprints(cur: duckdb.DuckDBPyConnection) -> dict[tuple[UUID, UUID, str], str]:
    rows = cur.execute("SELECT project_id, source_id, month, fingerprint FROM export_state")
    return {(r[0], r[1], r[2]): r[3] for r in rows.fetchall()}
