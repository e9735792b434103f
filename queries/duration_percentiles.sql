-- title: Run duration percentiles by source
-- description: p50, p95 and p99 of durationMs (in seconds) over finished runs, per source.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- chart: bar x=project,source y=p95_seconds
-- From percentiles_by_source (docs/sql.md): interpolated as quantile_cont does, to within 4 %
-- (max exact), in memory that stays inside database.memory_limit over all of history, where
-- quantile_cont holds every value of a source.
SELECT
    project,
    source,
    runs,
    round(p50_seconds, 3) AS p50_seconds,
    round(p95_seconds, 3) AS p95_seconds,
    round(p99_seconds, 3) AS p99_seconds,
    round(max_seconds, 3) AS max_seconds
FROM percentiles_by_source('duration', $since)
ORDER BY p95_seconds DESC, project, source;
