-- title: Usage per project per calendar month
-- description: Billable and inserted rows of finished runs, per project and calendar month.
-- param: since date = today-365 | first day counted
-- param: until date = today | last day counted, included
-- param: tz tz = UTC | timezone of the calendar
-- chart: bar x=month y=billable_rows series=project
SELECT
    project,
    strftime(day, '%Y-%m') AS month,
    sum(runs) AS runs,
    sum(billable_rows) AS billable_rows,
    sum(inserted_rows) AS inserted_rows
FROM finished_per_day($tz, $since, $until, $calendar_tz)
GROUP BY ALL
ORDER BY month, project;
