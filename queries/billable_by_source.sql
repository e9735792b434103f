-- title: Billable rows by source over a period
-- description: Which sources the bill comes from: billable rows per source and their share.
-- param: since date = month_start | first day counted
-- param: until date = today | last day counted, included
-- param: tz tz = UTC | timezone of the calendar
-- chart: bar x=project,source y=billable_rows
SELECT
    project,
    source,
    sum(runs) AS runs,
    sum(billable_rows) AS billable_rows,
    sum(inserted_rows) AS inserted_rows,
    round(sum(billable_rows) / nullif(sum(sum(billable_rows)) OVER (), 0), 4) AS share
FROM finished_per_day($tz, $since, $until, $calendar_tz)
GROUP BY ALL
ORDER BY billable_rows DESC, project, source;
