-- title: Queue wait by source
-- description: Time from queuedAt to startedAt (seconds), per source: how long runs waited.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- chart: bar x=project,source y=p95_seconds
-- From percentiles_by_source, as duration_percentiles: to within 4 % (max exact), over any period.
SELECT
    project,
    source,
    runs,
    round(p50_seconds, 3) AS p50_seconds,
    round(p95_seconds, 3) AS p95_seconds,
    round(max_seconds, 3) AS max_seconds
FROM percentiles_by_source('queue_wait', $since)
ORDER BY p95_seconds DESC, project, source;
