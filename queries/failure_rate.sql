-- title: Failure rate by source and trigger
-- description: Finished runs, failed runs and their ratio, per source and trigger.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- chart: bar x=project,source,trigger y=failure_rate
SELECT
    project,
    source,
    trigger,
    count(*) AS runs,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    round(count(*) FILTER (WHERE status = 'failed') / count(*), 4) AS failure_rate
FROM runs
WHERE finished AND queued_at >= $since
GROUP BY ALL
ORDER BY failure_rate DESC, project, source, trigger;
