-- title: Queue wait by source
-- description: Time from queuedAt to startedAt (seconds), per source: how long runs waited.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
SELECT
    project,
    source,
    count(*) AS runs,
    round(quantile_cont(queue_wait_seconds, 0.50), 3) AS p50_seconds,
    round(quantile_cont(queue_wait_seconds, 0.95), 3) AS p95_seconds,
    round(max(queue_wait_seconds), 3) AS max_seconds
FROM runs
WHERE started_at IS NOT NULL AND CAST(queued_at AS DATE) >= $since
GROUP BY ALL
ORDER BY p95_seconds DESC, project, source;
