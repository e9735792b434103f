-- title: Recent failures
-- description: The newest failed runs with their error messages.
-- param: limit int = 50 | how many runs
SELECT
    finished_at,
    project,
    source,
    trigger,
    error_message,
    id
FROM runs
WHERE status = 'failed'
ORDER BY finished_at DESC NULLS LAST, id
LIMIT $limit;
