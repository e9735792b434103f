-- title: Runs stuck in progress
-- description: Runs still queued or active long after they were queued, and runs flagged stale.
-- param: older_than_minutes int = 60 | queued at least this long ago
SELECT
    project,
    source,
    id,
    status,
    queued_at,
    started_at,
    last_seen_at,
    stale_since,
    round((epoch(now()) - epoch(queued_at)) / 60, 1) AS minutes_since_queued
FROM runs
WHERE NOT finished
  AND status IN ('queued', 'active')
  AND (queued_at < now() - $older_than_minutes * INTERVAL 1 MINUTE OR stale_since IS NOT NULL)
ORDER BY queued_at, id;
