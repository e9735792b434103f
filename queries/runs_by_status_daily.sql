-- title: Finished runs per day by status
-- description: How many runs finished each calendar day, by their final status.
-- param: since date = today-89 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
-- param: project str = | only this project (empty: every project)
-- param: source str = | only sources of this name (empty: every source)
-- chart: bar x=day y=runs series=status
SELECT
    day,
    status,
    sum(runs) AS runs
FROM finished_per_day($tz, $since, $until, $calendar_tz)
WHERE ($project = '' OR project = $project) AND ($source = '' OR source = $source)
GROUP BY ALL
ORDER BY day, status;
