-- title: Recent failures
-- description: The newest failed runs with their error messages (at most 10,000).
-- param: limit int = 50 | how many runs
-- Two steps, as DuckDB cannot do them in one within database.memory_limit over a long history:
-- the newest failed runs by id alone (a constant LIMIT keeps only them while scanning, where a
-- parameter would sort every failed run), then their details.
WITH newest AS (
    SELECT id, finished_at FROM runs
    WHERE status = 'failed'
    ORDER BY finished_at DESC NULLS LAST, id
    LIMIT 10000
),
picked AS (
    SELECT * FROM newest ORDER BY finished_at DESC NULLS LAST, id LIMIT $limit
)
SELECT
    r.finished_at,
    r.project,
    r.source,
    r.trigger,
    r.error_message,
    r.id
FROM runs r
JOIN picked p ON r.id = p.id AND r.finished_at IS NOT DISTINCT FROM p.finished_at
ORDER BY r.finished_at DESC NULLS LAST, r.id;
