-- title: Usage per project per calendar month
-- description: Billable and inserted rows of finished runs, per project and calendar month.
-- param: since date = today-365 | first day counted
-- param: until date = today | last day counted, included
-- param: tz tz = UTC | timezone of the calendar
SELECT
    project,
    strftime(timezone($tz, finished_at), '%Y-%m') AS month,
    count(*) AS runs,
    sum(billable_rows) AS billable_rows,
    sum(total_inserted_rows) AS inserted_rows
FROM runs
WHERE finished AND finished_at IS NOT NULL
  AND CAST(timezone($tz, finished_at) AS DATE) BETWEEN $since AND $until
GROUP BY ALL
ORDER BY month, project;
