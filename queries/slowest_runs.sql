-- title: Slowest runs
-- description: The longest finished runs, slowest first.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- param: limit int = 20 | how many runs
SELECT
    id,
    project,
    source,
    trigger,
    status,
    started_at,
    finished_at,
    round(duration_seconds, 3) AS duration_seconds,
    billable_rows
FROM runs
WHERE finished AND duration_ms IS NOT NULL AND CAST(queued_at AS DATE) >= $since
ORDER BY duration_ms DESC, id
LIMIT $limit;
