-- title: Usage per project per day
-- description: Billable and inserted rows of finished runs, per project and calendar day.
-- param: since date = today-29 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
-- chart: bar x=day y=billable_rows series=project
SELECT
    project,
    day,
    sum(runs) AS runs,
    sum(billable_rows) AS billable_rows,
    sum(inserted_rows) AS inserted_rows
FROM finished_per_day($tz, $since, $until, $calendar_tz)
GROUP BY ALL
ORDER BY day, project;
