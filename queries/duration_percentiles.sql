-- title: Run duration percentiles by source
-- description: p50, p95 and p99 of durationMs (in seconds) over finished runs, per source.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
SELECT
    project,
    source,
    count(*) AS runs,
    round(quantile_cont(duration_seconds, 0.50), 3) AS p50_seconds,
    round(quantile_cont(duration_seconds, 0.95), 3) AS p95_seconds,
    round(quantile_cont(duration_seconds, 0.99), 3) AS p99_seconds,
    round(max(duration_seconds), 3) AS max_seconds
FROM runs
WHERE finished AND duration_ms IS NOT NULL AND CAST(queued_at AS DATE) >= $since
GROUP BY ALL
ORDER BY p95_seconds DESC, project, source;
