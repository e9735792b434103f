-- title: Failure ratio and duration by source
-- description: Finished runs per source over a period: how many failed, and p50/p95 of durationMs in seconds (from a sample of 1,024 runs per source).
-- param: since date = today-29 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
-- param: project str = | only this project (empty: every project)
-- param: source str = | only sources of this name (empty: every source)
-- chart: bar x=project,source y=failure_ratio
-- Counts come from the daily rollup; durations from the runs finished in the period, found by
-- finished_at bounds that DuckDB's zone maps use (history is stored in time order). A run with
-- a finished_at is finished whatever its status says (the runs view's rule).
-- The percentiles come from a reservoir sample of 1,024 durations per source: exact for a source
-- with fewer runs in the period, within a percentile or two above that. An exact percentile
-- holds every duration (90 days of a busy fleet is millions), and approx_quantile's t-digest
-- state is large enough that 1,000 sources exceed database.memory_limit (measured at 48MB).
WITH counted AS (
    SELECT
        project,
        source,
        sum(runs) AS runs,
        coalesce(sum(runs) FILTER (WHERE status = 'failed'), 0) AS failed
    FROM finished_per_day($tz, $since, $until, $calendar_tz)
    WHERE ($project = '' OR project = $project) AND ($source = '' OR source = $source)
    GROUP BY ALL
),
durations AS (
    -- By ids, names joined after: joining every run to its names costs more than the scan.
    SELECT
        coalesce(s.project_name, d.project_id::VARCHAR) AS project,
        coalesce(s.source_name, d.source_id::VARCHAR) AS source,
        d.q
    FROM (
        SELECT project_id, source_id, reservoir_quantile(duration_ms, [0.5, 0.95], 1024) AS q
        FROM events
        WHERE duration_ms IS NOT NULL
          AND finished_at >= timezone($tz, CAST($since AS TIMESTAMP))
          AND finished_at < timezone($tz, CAST($until + 1 AS TIMESTAMP))
        GROUP BY ALL
    ) d LEFT JOIN sources s USING (project_id, source_id)
)
SELECT
    c.project,
    c.source,
    c.runs,
    c.failed,
    round(c.failed / c.runs, 4) AS failure_ratio,
    round(d.q[1] / 1000, 3) AS p50_seconds,
    round(d.q[2] / 1000, 3) AS p95_seconds
FROM counted c LEFT JOIN durations d USING (project, source)
ORDER BY failure_ratio DESC, c.project, c.source;
