-- title: Billable rows per source per day
-- description: Finished runs and their billable rows, per source and calendar day (the /usage page's first chart).
-- param: since date = today-89 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
-- param: project str = | only this project (empty: every project)
-- param: source str = | only sources of this name (empty: every source)
-- chart: bar x=day y=billable_rows series=project,source top=8
SELECT
    day,
    project,
    source,
    sum(runs) AS runs,
    sum(billable_rows) AS billable_rows
FROM finished_per_day($tz, $since, $until, $calendar_tz)
WHERE ($project = '' OR project = $project) AND ($source = '' OR source = $source)
GROUP BY ALL
ORDER BY day, project, source;
