-- title: Run duration percentiles by source
-- description: p50, p95 and p99 of durationMs (in seconds) over finished runs, per source.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- chart: bar x=project,source y=p95_seconds
-- Exact percentiles, interpolated as quantile_cont does, found by rank: a sort can spill to
-- disk, where quantile_cont holds every value of a source in memory (a year of a busy fleet
-- does not fit in database.memory_limit).
WITH ranked AS (
    SELECT
        project,
        source,
        duration_seconds AS d,
        row_number() OVER (PARTITION BY project, source ORDER BY duration_seconds) - 1 AS i,
        count(*) OVER (PARTITION BY project, source) AS n
    FROM runs
    WHERE finished AND duration_ms IS NOT NULL AND queued_at >= $since
),
picked AS (
    SELECT project, source, n, p, min(d) + (max(d) - min(d)) * ((n - 1) * p - floor((n - 1) * p)) AS v
    FROM ranked, (VALUES (0.5), (0.95), (0.99), (1.0)) q(p)
    WHERE i IN (floor((n - 1) * p), ceil((n - 1) * p))
    GROUP BY project, source, n, p
)
SELECT
    project,
    source,
    n AS runs,
    round(any_value(v) FILTER (WHERE p = 0.5), 3) AS p50_seconds,
    round(any_value(v) FILTER (WHERE p = 0.95), 3) AS p95_seconds,
    round(any_value(v) FILTER (WHERE p = 0.99), 3) AS p99_seconds,
    round(any_value(v) FILTER (WHERE p = 1.0), 3) AS max_seconds
FROM picked
GROUP BY project, source, n
ORDER BY p95_seconds DESC, project, source;
