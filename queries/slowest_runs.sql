-- title: Slowest runs
-- description: The longest finished runs, slowest first (at most 5,000).
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- param: limit int = 20 | how many runs
-- Two steps, as in recent_failures: the slowest runs by id alone, then their details.
-- 5,000, not more: DuckDB keeps only the top rows while scanning (Top N) for a LIMIT under
-- 5,000 or a small share of its input; LIMIT 10000 sorted all of a million-run history,
-- 46 of the 48MB pool, and ran out of memory beside polling.
WITH slowest AS (
    SELECT id, queued_at, duration_ms FROM runs
    WHERE finished AND duration_ms IS NOT NULL AND queued_at >= $since
    ORDER BY duration_ms DESC, id
    LIMIT 5000
),
picked AS (
    SELECT * FROM slowest ORDER BY duration_ms DESC, id LIMIT $limit
)
SELECT
    r.id,
    r.project,
    r.source,
    r.trigger,
    r.status,
    r.started_at,
    r.finished_at,
    round(r.duration_seconds, 3) AS duration_seconds,
    r.billable_rows
FROM runs r
JOIN picked p ON r.id = p.id AND r.queued_at = p.queued_at
ORDER BY r.duration_ms DESC, r.id;
