"""A grown history, written straight into the current schema, for the benchmarks.

``N`` finished runs spread evenly over ``days`` up to ``end``, over the given sources with a
skewed mix (a few busy sources, many quiet ones: source ``k`` of ``S`` gets a share that falls
off like ``1 / sqrt(k)``), 15 % ``regenerate``, 6 % failed, 0.5 % ``cancelled``, log-normal
durations (median 60 s) and row counts (median 50,000). Every run is older than a day, so it
all belongs in ``events_history``, appended in time order as the exporter itself would; the
totals are then built by the store's own ``rebuild``, and each source gets a ``poll_state``
row as if the exporter had polled it up to ``end``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import duckdb
import pyarrow as pa

from exporter.store import Rollups, Store

ERRORS = ["target database rejected the connection", "generator timed out after 3 retries"]
Source = tuple[UUID, UUID, str, str]  # project id, source id, project name, source name


def build(
    path: Path,
    runs: int,
    sources: Sequence[Source],
    *,
    end: datetime,
    days: float = 365,
    memory_limit: str = "2GB",
) -> None:
    """Write ``runs`` runs into a new database at ``path`` (which must not exist)."""
    Store(path).close()
    conn = duckdb.connect(str(path), config={"memory_limit": memory_limit})
    try:
        conn.execute("SET TimeZone = 'UTC'")
        keys = pa.table(
            {
                "k": list(range(len(sources))),
                "project_id": [str(s[0]) for s in sources],
                "source_id": [str(s[1]) for s in sources],
                "project": [s[2] for s in sources],
                "source": [s[3] for s in sources],
            }
        )
        conn.register("keys", keys)
        conn.execute(
            """INSERT INTO sources SELECT project_id::UUID, source_id::UUID, project, source, true
               FROM keys"""
        )
        if runs:
            _fill(conn, runs, sources, end, days)
        conn.execute(
            """INSERT INTO poll_state (project_id, source_id, last_poll_at, last_success_at,
                   last_outcome, page_limit, interval_seconds, successful_polls, window_start)
               SELECT k.project_id::UUID, k.source_id::UUID, $end, $end, 'success', 200, 60,
                      1000, w.start
               FROM keys k LEFT JOIN (
                   SELECT source_id, list_min(max(queued_at, 200)) AS start
                   FROM events_history GROUP BY ALL
               ) w ON w.source_id = k.source_id::UUID""",
            {"end": end},
        )
        conn.execute("DELETE FROM store_settings")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    # The totals, built by the exporter's own code from what is stored.
    Store(path, rollups=Rollups(), memory_limit=memory_limit).close()


def _fill(
    conn: duckdb.DuckDBPyConnection,
    runs: int,
    sources: Sequence[Source],
    end: datetime,
    days: float,
) -> None:
    """Runs in queued order, straight from ``range``: no join, no sort, so the insert streams."""
    span_us = int(timedelta(days=days) / timedelta(microseconds=1))
    errors = ", ".join(f"'{e}'" for e in ERRORS)
    # u(n): a uniform draw in [0, 1) for run i, stream n: hashing keeps it reproducible.
    u = "((hash(i, {n}) % 1000003) / 1000003.0)"
    conn.execute(
        f"""
        INSERT INTO events_history
        SELECT id, $projects[k + 1]::UUID, $sources[k + 1]::UUID, NULL, NULL,
               $names[k + 1] || '-' || i, trigger, status, queued, started, finished,
               duration_ms, inserted, CASE WHEN status = 'success' THEN inserted ELSE 0 END,
               CASE WHEN status = 'failed' THEN [{errors}][1 + i % {len(ERRORS)}] END,
               '{{"mode":"queue","targetProvider":"postgres","targetSchema":"public"}}'::JSON,
               '{{"workerRegion":"eu-central-1"}}'::JSON,
               queued, finished, queued, finished, NULL
        FROM (
            SELECT i, uuid() AS id,
                   CAST(floor({len(sources)} * pow({u.format(n=1)}, 2)) AS BIGINT) AS k,
                   CASE WHEN {u.format(n=2)} < 0.15 THEN 'regenerate' ELSE 'populate' END
                       AS trigger,
                   CASE WHEN {u.format(n=3)} < 0.06 THEN 'failed'
                        WHEN {u.format(n=3)} < 0.065 THEN 'cancelled' ELSE 'success' END
                       AS status,
                   $end - to_microseconds(
                       CAST(({runs} - i) * {span_us}::HUGEINT // {runs} AS BIGINT)
                   ) AS queued,
                   queued + to_seconds(CAST(30 * {u.format(n=4)} AS BIGINT)) AS started,
                   CAST(60000 * exp(1.2 * ({u.format(n=5)} + {u.format(n=6)} + {u.format(n=7)}
                       - 1.5)) AS BIGINT) AS duration_ms,
                   started + to_milliseconds(duration_ms) AS finished,
                   CAST(50000 * exp(1.6 * ({u.format(n=8)} + {u.format(n=9)} + {u.format(n=10)}
                       - 1.5)) AS BIGINT) AS raw_rows,
                   CASE WHEN status = 'failed' THEN raw_rows // 3 ELSE raw_rows END AS inserted
            FROM range({runs}) r(i)
        )
        """,
        {
            "end": end,
            "projects": [str(s[0]) for s in sources],
            "sources": [str(s[1]) for s in sources],
            "names": [s[3] for s in sources],
        },
    )
