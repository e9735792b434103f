-- title: Usage per project per day
-- description: Billable and inserted rows of finished runs, per project and calendar day.
-- param: since date = today-29 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
SELECT
    project,
    CAST(timezone($tz, finished_at) AS DATE) AS day,
    count(*) AS runs,
    sum(billable_rows) AS billable_rows,
    sum(total_inserted_rows) AS inserted_rows
FROM runs
WHERE finished AND finished_at IS NOT NULL
  AND CAST(timezone($tz, finished_at) AS DATE) BETWEEN $since AND $until
GROUP BY ALL
ORDER BY day, project;
