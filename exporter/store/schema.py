"""The database layout, its numbered migrations, and the SQL form of the run rules.

Runs live in two tables with the same columns:

- ``events_live``: runs that can still change — in flight, or young enough to appear in their
  source's window again. The only per-row index in the database (its primary key) is here, so
  upserts cost the same at any history size.
- ``events_history``: everything else. No index; rows are appended in ``queued_at`` order by
  :mod:`exporter.store.history`, so DuckDB's zone maps skip what a time filter excludes.

``events`` is the view over both and ``runs`` adds names and derived columns, so SQL written for
earlier versions keeps working. Counters and histograms are kept as running totals
(:mod:`exporter.store.totals`), so a scrape reads totals, never every run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import duckdb

from exporter.models import FINAL_STATUSES, IN_FLIGHT_STATUSES

# A run stays live while it is among its source's newest LIVE_PER_SOURCE (the API's largest
# window: no poll can show an older one) and younger than LIVE_MAX_AGE. The age bound keeps what
# moves to history about the same age, which is what keeps history sorted by time.
LIVE_PER_SOURCE = 200
LIVE_MAX_AGE = timedelta(days=1)


def _quoted(values: frozenset[str] | tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


def finished(p: str = "") -> str:
    """The contract's rule (``GenerationEvent.is_finished``) in SQL; ``p`` prefixes the column
    names (``"e."``, ``"old_"``)."""
    return f"({p}status IN ({_quoted(FINAL_STATUSES)}) OR {p}finished_at IS NOT NULL)"


def in_flight(p: str = "") -> str:
    """Queued or active and not finished: what ``synthbrew_generation_in_progress`` counts
    (unless flagged stale)."""
    return f"({p}status IN ({_quoted(IN_FLIGHT_STATUSES)}) AND {p}finished_at IS NULL)"


# Every column of a stored run, in table order. The first block comes from the API; the last
# three are the exporter's own bookkeeping.
EVENT_COLUMNS = """
    id UUID NOT NULL,
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    team_id UUID,
    schema_version_id UUID,
    slug VARCHAR,
    trigger VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    queued_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT,
    total_inserted_rows BIGINT NOT NULL,
    billable_rows BIGINT NOT NULL,
    error_message VARCHAR,
    metadata JSON,
    extra JSON,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    stale_since TIMESTAMPTZ
"""


def _runs_view() -> str:
    return f"""
    CREATE VIEW runs AS
    SELECT
        e.*,
        coalesce(s.project_name, e.project_id::VARCHAR) AS project,
        coalesce(s.source_name, e.source_id::VARCHAR) AS source,
        {finished("e.")} AS finished,
        e.duration_ms / 1000.0 AS duration_seconds,
        epoch(e.started_at) - epoch(e.queued_at) AS queue_wait_seconds
    FROM events e LEFT JOIN sources s USING (project_id, source_id);
    """


_V1 = """
CREATE TABLE events (
    id UUID PRIMARY KEY,
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    team_id UUID,
    schema_version_id UUID,
    slug VARCHAR,
    trigger VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    queued_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT,
    total_inserted_rows BIGINT NOT NULL,
    billable_rows BIGINT NOT NULL,
    error_message VARCHAR,
    metadata JSON,
    extra JSON,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    stale_since TIMESTAMPTZ
);
CREATE TABLE poll_state (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    last_poll_at TIMESTAMPTZ,
    last_success_at TIMESTAMPTZ,
    last_outcome VARCHAR,
    last_error_reason VARCHAR,
    last_error_message VARCHAR,
    newest_event_id UUID,
    newest_event_queued_at TIMESTAMPTZ,
    page_limit INTEGER,
    interval_seconds DOUBLE,
    successful_polls BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, source_id)
);
"""

_V2 = """
CREATE TABLE sources (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    project_name VARCHAR NOT NULL,
    source_name VARCHAR NOT NULL,
    configured BOOLEAN NOT NULL DEFAULT true,
    PRIMARY KEY (project_id, source_id)
);
CREATE TABLE export_state (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    month VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    exported_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, source_id, month)
);
CREATE VIEW runs AS
SELECT
    e.*,
    coalesce(s.project_name, e.project_id::VARCHAR) AS project,
    coalesce(s.source_name, e.source_id::VARCHAR) AS source,
    (e.status IN ('success', 'failed') OR e.finished_at IS NOT NULL) AS finished,
    e.duration_ms / 1000.0 AS duration_seconds,
    epoch(e.started_at) - epoch(e.queued_at) AS queue_wait_seconds
FROM events e LEFT JOIN sources s USING (project_id, source_id);
"""

# v3 tables. The rollups have no primary key: they are upserted with MERGE, and an index that
# grows with days (daily_usage) is exactly what this layout exists to avoid.
V3_TABLES = f"""
CREATE TABLE events_live ({EVENT_COLUMNS}, PRIMARY KEY (id));
CREATE TABLE events_history ({EVENT_COLUMNS});
CREATE TABLE run_totals (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    trigger VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    runs BIGINT NOT NULL,
    runs_retracted BIGINT NOT NULL,
    duration_count BIGINT NOT NULL,
    duration_sum_ms HUGEINT NOT NULL,
    duration_buckets BIGINT[] NOT NULL
);
CREATE TABLE row_totals (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    trigger VARCHAR NOT NULL,
    billable_rows HUGEINT NOT NULL,
    billable_rows_retracted HUGEINT NOT NULL,
    inserted_rows HUGEINT NOT NULL,
    inserted_rows_retracted HUGEINT NOT NULL
);
CREATE TABLE daily_usage (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    day DATE NOT NULL,
    trigger VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    runs BIGINT NOT NULL,
    billable_rows HUGEINT NOT NULL,
    inserted_rows HUGEINT NOT NULL
);
CREATE TABLE history_stats (
    project_id UUID NOT NULL,
    source_id UUID NOT NULL,
    status VARCHAR NOT NULL,
    runs BIGINT NOT NULL,
    stale_runs BIGINT NOT NULL,
    last_finished_at TIMESTAMPTZ
);
CREATE TABLE store_settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
ALTER TABLE poll_state ADD COLUMN window_start TIMESTAMPTZ;
"""

# Finished runs per day of a calendar, with names: from the daily_usage rollup when the
# calendar asked for is the one it is kept in (billing.timezone, which reports get as
# $calendar_tz), else from the runs themselves. DuckDB folds the two conditions when the macro
# is called with bound parameters, so only one side is ever read: a year of a busy fleet is 100
# million runs to convert to local days, its rollup a few hundred thousand rows.
FINISHED_PER_DAY = f"""
CREATE MACRO finished_per_day(tz, since, until, calendar_tz) AS TABLE
SELECT coalesce(s.project_name, u.project_id::VARCHAR) AS project,
       coalesce(s.source_name, u.source_id::VARCHAR) AS source,
       u.* EXCLUDE (project_id, source_id)
FROM (
    SELECT project_id, source_id, day, trigger, status, runs, billable_rows, inserted_rows
    FROM daily_usage WHERE tz = calendar_tz AND day BETWEEN since AND until
    UNION ALL
    SELECT project_id, source_id, CAST(timezone(tz, finished_at) AS DATE), trigger, status, 1,
           billable_rows, total_inserted_rows
    FROM events
    WHERE tz IS DISTINCT FROM calendar_tz AND {finished()}
      -- local days lie within a day of the same days in UTC: a bound DuckDB's zone maps can
      -- use, then the exact rule
      AND finished_at >= since - INTERVAL 1 DAY AND finished_at < until + INTERVAL 2 DAY
      AND CAST(timezone(tz, finished_at) AS DATE) BETWEEN since AND until
) u LEFT JOIN sources s USING (project_id, source_id);
"""

# History as every scan of it should read it: its time columns first. DuckDB checks a scan's
# filters row group by row group in the order of the scan's columns, loading each checked
# column's segment metadata for that row group and keeping it for the life of the process; a
# filter that prunes stops the checks. Scanned in table order, a lookup by id or a join on the
# source checked those UUID columns first, for every row group: at 100 million stored runs the
# start-up read of the windows kept 17 MB more in the process, 6 MB with this order. So scans
# of history on the polling path go through this, and ``events`` does too.
HISTORY_BY_TIME = (
    "(SELECT queued_at, finished_at, * EXCLUDE (queued_at, finished_at) FROM events_history)"
)
_EVENT_NAMES = ", ".join(line.split()[0] for line in EVENT_COLUMNS.strip().splitlines())
_EVENTS_VIEW = f"""
CREATE OR REPLACE VIEW events AS
SELECT * FROM events_live UNION ALL SELECT {_EVENT_NAMES} FROM {HISTORY_BY_TIME};
"""

# p50/p95/p99/max of a run's duration or queue wait per source, named as ``runs`` names them,
# interpolated between ranks as quantile_cont does, in memory that does not grow with the
# period. Ranking every value (a window, quantile_cont's state) holds the whole period: a month
# of 100 million stored runs ran out of the 48MB pool, and two passes, the second keeping the
# values near each rank, did at a week. So values are counted, with their least and greatest,
# in buckets 4 % wide on a log scale (ln(1 ms + |value|) * 25): about a hundred per source,
# however many runs. A rank's value is read from its bucket, between that bucket's least and
# greatest by position: exact at a bucket's first and last rank (so ``max`` is exact) and where
# the bucket holds one distinct value, otherwise off by less than the bucket's spread, under
# 4.1 % of 1 ms + |value|. Everything after the count is one row of lists per source.
PERCENTILES_BY_SOURCE = f"""
CREATE OR REPLACE MACRO percentiles_by_source(measure, since) AS TABLE
WITH measured AS (
    SELECT project_id, source_id, v,
           -- monotone in v: zero and above from 0 up, below zero from -1 down
           CAST(CASE WHEN v >= 0 THEN floor(ln(1 + v * 1000) * 25)
                     ELSE -1 - floor(ln(1 - v * 1000) * 25) END AS INTEGER) AS b
    FROM (
        SELECT project_id, source_id,
               CASE measure
                   WHEN 'duration' THEN CASE WHEN {finished()} THEN duration_ms / 1000.0 END
                   WHEN 'queue_wait' THEN epoch(started_at) - epoch(queued_at)
                   ELSE error('percentiles_by_source: measure is duration or queue_wait')
               END AS v
        FROM events
        WHERE queued_at >= since
    )
    WHERE v IS NOT NULL
),
buckets AS (
    -- by ids, names joined after: joining every run to its names costs more than the scan
    SELECT project_id, source_id, b, count(*) AS n, min(v) AS lo, max(v) AS hi
    FROM measured
    GROUP BY ALL
),
named AS (
    -- a source replaced under the same names is one row, as in every report
    SELECT coalesce(s.project_name, k.project_id::VARCHAR) AS project,
           coalesce(s.source_name, k.source_id::VARCHAR) AS source,
           k.b, CAST(sum(k.n) AS BIGINT) AS n, min(k.lo) AS lo, max(k.hi) AS hi
    FROM buckets k LEFT JOIN sources s USING (project_id, source_id)
    GROUP BY ALL
),
per_source AS (
    -- its buckets in order, sorted as one list (an ordered aggregate per column buffered ~20 MB
    -- for 1,000 sources)
    SELECT project, source, total, list_transform(bk, lambda x: x.n) AS ns,
           list_transform(bk, lambda x: x.lo) AS los, list_transform(bk, lambda x: x.hi) AS his
    FROM (SELECT project, source, CAST(sum(n) AS BIGINT) AS total,
                 list_sort(list(struct_pack(b, n, lo, hi))) AS bk
          FROM named
          GROUP BY project, source)
),
ranked AS (
    -- per source, for p in 0.5, 0.95, 0.99, 1: the two ranks (from 0) quantile_cont
    -- interpolates between (p is DECIMAL, so exact); upto[i] = the values in buckets 1..i
    SELECT project, source, total, ns, los, his,
           list_transform(range(1, len(ns) + 1), lambda i: list_sum(ns[1:i])) AS upto,
           list_transform(
               flatten(list_transform([0.5, 0.95, 0.99, 1.0],
                                      lambda p: [floor((total - 1) * p), ceil((total - 1) * p)])),
               lambda r: CAST(r AS BIGINT)) AS rs
    FROM per_source
),
located AS (
    -- rank r lies in the first bucket whose cumulative count passes it
    SELECT *,
           list_transform(rs, lambda r: list_position(list_transform(upto, lambda u: u > r), true))
               AS ix
    FROM ranked
),
valued AS (
    -- each rank's value, between its bucket's least and greatest by its position among the
    -- bucket's values (a bucket of one value has his = los)
    SELECT project, source, total, rs,
           list_transform(range(1, len(rs) + 1), lambda k:
               los[ix[k]] + (his[ix[k]] - los[ix[k]]) * (rs[k] - (upto[ix[k]] - ns[ix[k]]))
                   / greatest(ns[ix[k]] - 1, 1)) AS vs
    FROM located
)
SELECT project, source, total AS runs,
       vs[1] + (vs[2] - vs[1]) * ((total - 1) * 0.5 - rs[1]) AS p50_seconds,
       vs[3] + (vs[4] - vs[3]) * ((total - 1) * 0.95 - rs[3]) AS p95_seconds,
       vs[5] + (vs[6] - vs[5]) * ((total - 1) * 0.99 - rs[5]) AS p99_seconds,
       vs[8] AS max_seconds
FROM valued;
"""

VIEWS = f"""
{_EVENTS_VIEW}
{_runs_view()}
{FINISHED_PER_DAY}
"""


def _v3(conn: duckdb.DuckDBPyConnection) -> None:
    """Split the v2 ``events`` table into live runs and history; the totals are built from the
    stored runs right after (``Store`` sees they were never built)."""
    from exporter.store.history import split_into_live_and_history

    conn.execute(V3_TABLES)
    split_into_live_and_history(conn, "events")
    conn.execute("DROP VIEW runs")
    conn.execute("DROP TABLE events")
    conn.execute(VIEWS)


Migration = str | Callable[[duckdb.DuckDBPyConnection], None]
# Append-only: a released database was built by a prefix of this list. v4 only redefines
# ``events`` to read history time-first (see HISTORY_BY_TIME), v5 adds the percentile macro;
# no data moves.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _v3, _EVENTS_VIEW, PERCENTILES_BY_SOURCE)
