-- title: Queue wait by source
-- description: Time from queuedAt to startedAt (seconds), per source: how long runs waited.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- chart: bar x=project,source y=p95_seconds
-- Exact percentiles by rank, as in duration_percentiles: bounded memory at any history size.
WITH ranked AS (
    SELECT
        project,
        source,
        queue_wait_seconds AS w,
        row_number() OVER (PARTITION BY project, source ORDER BY queue_wait_seconds) - 1 AS i,
        count(*) OVER (PARTITION BY project, source) AS n
    FROM runs
    WHERE started_at IS NOT NULL AND queued_at >= $since
),
picked AS (
    SELECT project, source, n, p, min(w) + (max(w) - min(w)) * ((n - 1) * p - floor((n - 1) * p)) AS v
    FROM ranked, (VALUES (0.5), (0.95), (1.0)) q(p)
    WHERE i IN (floor((n - 1) * p), ceil((n - 1) * p))
    GROUP BY project, source, n, p
)
SELECT
    project,
    source,
    n AS runs,
    round(any_value(v) FILTER (WHERE p = 0.5), 3) AS p50_seconds,
    round(any_value(v) FILTER (WHERE p = 0.95), 3) AS p95_seconds,
    round(any_value(v) FILTER (WHERE p = 1.0), 3) AS max_seconds
FROM picked
GROUP BY project, source, n
ORDER BY p95_seconds DESC, project, source;
