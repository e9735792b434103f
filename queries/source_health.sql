-- title: Failure ratio and duration by source
-- description: Finished runs per source over a period: how many failed, and p50/p95 of durationMs in seconds (to within about 2 %).
-- param: since date = today-29 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
-- param: project str = | only this project (empty: every project)
-- param: source str = | only sources of this name (empty: every source)
-- chart: bar x=project,source y=failure_ratio
-- Counts come from the daily rollup; durations from the runs finished in the period, found by
-- finished_at bounds that DuckDB's zone maps use (history is stored in time order). A run with
-- a finished_at is finished whatever its status says (the runs view's rule).
-- The percentiles are the runs' own nearest-rank percentiles (quantile_disc's) read from
-- durations counted in buckets 4 % wide on a log scale, so at most 2.02 % off: one count per
-- source and bucket (25 per doubling of the spread of its durations, however many runs the
-- period holds), with the cumulative counts as lists per source. Measured alone with
-- database.memory_limit at 32MB: a year of 100 million stored runs in 4.8 s; buckets 2 % wide,
-- or a window function over the buckets, ran out of memory. Ranking every duration grows with
-- the period, and reservoir_quantile's states live outside database.memory_limit (117 MB over
-- the process's base for 30 days of 100 million stored runs).
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
buckets AS (
    -- By ids, names joined after: joining every run to its names costs more than the scan.
    -- A bucket is round(ln(ms) * 25); zero-length runs get -1, below every real bucket.
    SELECT
        project_id,
        source_id,
        CASE WHEN duration_ms > 0 THEN round(ln(duration_ms) * 25)::INTEGER ELSE -1 END AS b,
        count(*) AS n
    FROM events
    WHERE duration_ms IS NOT NULL
      AND finished_at >= timezone($tz, CAST($since AS TIMESTAMP))
      AND finished_at < timezone($tz, CAST($until + 1 AS TIMESTAMP))
    GROUP BY ALL
),
per_source AS (
    SELECT
        project_id,
        source_id,
        list(b ORDER BY b) AS bs,
        list(n ORDER BY b) AS ns,
        sum(n) AS total
    FROM buckets
    GROUP BY ALL
),
cumulative AS (
    SELECT
        project_id,
        source_id,
        bs,
        total,
        list_transform(range(1, len(ns) + 1), lambda i: list_sum(ns[1:i])) AS upto
    FROM per_source
),
durations AS (
    -- The p-quantile is the ceil(total * p)-th run (at least the first), as quantile_disc
    -- picks: the first bucket whose cumulative count reaches it. 0.5 and 0.95 are DECIMAL
    -- literals, so total * p is exact.
    SELECT
        coalesce(s.project_name, q.project_id::VARCHAR) AS project,
        coalesce(s.source_name, q.source_id::VARCHAR) AS source,
        [q.b50, q.b95] AS q
    FROM (
        SELECT
            project_id,
            source_id,
            bs[list_position(list_transform(upto, lambda u: u >= greatest(ceil(total * 0.5), 1)), true)]
                AS b50,
            bs[list_position(list_transform(upto, lambda u: u >= greatest(ceil(total * 0.95), 1)), true)]
                AS b95
        FROM cumulative
    ) q LEFT JOIN sources s USING (project_id, source_id)
)
SELECT
    c.project,
    c.source,
    c.runs,
    c.failed,
    round(c.failed / c.runs, 4) AS failure_ratio,
    round(CASE WHEN d.q[1] < 0 THEN 0 ELSE exp(d.q[1] / 25) / 1000 END, 3) AS p50_seconds,
    round(CASE WHEN d.q[2] < 0 THEN 0 ELSE exp(d.q[2] / 25) / 1000 END, 3) AS p95_seconds
FROM counted c LEFT JOIN durations d USING (project, source)
ORDER BY failure_ratio DESC, c.project, c.source;
