-- title: Billable rows per source per day
-- description: Finished runs and their billable rows per calendar day, for the sources with the most billable rows over the period; the rest summed as "other" (the /usage page's daily chart).
-- param: since date = today-89 | first day (YYYY-MM-DD, today, today-N, month_start)
-- param: until date = today | last day, included
-- param: tz tz = UTC | timezone of the calendar
-- param: project str = | only this project (empty: every project)
-- param: source str = | only sources of this name (empty: every source)
-- param: top int = 8 | how many sources are named; the rest are "other"
-- chart: bar x=day y=billable_rows series=source
-- Ranked and summed here, so a page of 1,000 sources over 90 days fetches at most 90 x 9 rows.
-- Two passes over the daily rollup (over the runs when the calendar is not the rollup's), each
-- with a small hash table: the sources' totals (one row per source) to rank them, then the days
-- by named source or "other" (days x 9). One shared day-by-source step held every source's
-- every day (366,000 rows for a year of 1,000 sources) and took all of the default
-- database.memory_limit, failing the polls writing beside it.
WITH ranked AS (
    SELECT
        project,
        source,
        row_number() OVER (ORDER BY sum(billable_rows) DESC, project, source) AS rank
    FROM finished_per_day($tz, $since, $until, $calendar_tz)
    WHERE ($project = '' OR project = $project) AND ($source = '' OR source = $source)
    GROUP BY project, source
)
SELECT day, source, sum(runs) AS runs, sum(billable_rows) AS billable_rows
FROM (
    SELECT
        d.day,
        CASE WHEN r.rank <= $top THEN d.project || '/' || d.source ELSE 'other' END AS source,
        least(r.rank, $top + 1) AS rank,
        d.runs,
        d.billable_rows
    FROM finished_per_day($tz, $since, $until, $calendar_tz) d JOIN ranked r USING (project, source)
)
GROUP BY day, source
ORDER BY day, min(rank);
