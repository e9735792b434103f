-- title: Queue wait by source
-- description: Time from queuedAt to startedAt (seconds), per source: how long runs waited.
-- param: since date = today-6 | first day counted (UTC, by queuedAt)
-- chart: bar x=project,source y=p95_seconds
-- Exact percentiles in two passes without sorting the period's runs, as duration_percentiles
-- explains. A wait can be zero or negative (clocks upstream): all such share the lowest bucket.
WITH period AS (
    SELECT
        project_id,
        source_id,
        queue_wait_seconds AS v,
        CASE WHEN queue_wait_seconds > 0 THEN round(ln(queue_wait_seconds) * 25)::INTEGER
             ELSE -1000000 END AS b
    FROM runs
    WHERE started_at IS NOT NULL AND queued_at >= $since
),
by_id AS (
    SELECT project_id, source_id, b, count(*) AS n, min(v) AS lo, max(v) AS hi
    FROM period GROUP BY ALL
),
named AS (
    -- Sources are reported by their names, as in the runs view (two ids under the same names,
    -- a source replaced, are one row), and numbered by them: names would make every run's row
    -- wider in the second pass (then six months of 100 million runs did not fit).
    SELECT *, dense_rank() OVER (ORDER BY project, source) AS k
    FROM (
        SELECT DISTINCT
            i.project_id,
            i.source_id,
            coalesce(s.project_name, i.project_id::VARCHAR) AS project,
            coalesce(s.source_name, i.source_id::VARCHAR) AS source
        FROM by_id i LEFT JOIN sources s USING (project_id, source_id)
    )
),
buckets AS (
    SELECT k, b, sum(n) AS n, min(lo) AS lo, max(hi) AS hi
    FROM by_id JOIN named USING (project_id, source_id)
    GROUP BY k, b
),
placed AS (
    SELECT
        *,
        sum(n) OVER (PARTITION BY k ORDER BY b) - n AS below,
        sum(n) OVER (PARTITION BY k) AS total
    FROM buckets
),
wanted AS (
    -- The ranks quantile_cont interpolates between, per source, and the bucket each lies in.
    SELECT k, b, below, total, lo, hi, p, r
    FROM placed JOIN (
        SELECT k, p, unnest([floor((total - 1) * p), ceil((total - 1) * p)]::BIGINT[]) AS r
        FROM (SELECT DISTINCT k, total FROM placed), (VALUES (0.5), (0.95), (1.0)) q(p)
    ) USING (k)
    WHERE r >= below AND r < below + n
),
ranked AS (
    -- A bucket of one value (ties: whole seconds, or a few milliseconds) needs no ranking.
    SELECT k, b, v, row_number() OVER (PARTITION BY k, b ORDER BY v) - 1 AS i
    FROM period JOIN named USING (project_id, source_id)
    SEMI JOIN (SELECT DISTINCT k, b FROM wanted WHERE lo < hi) w USING (k, b)
),
found AS (
    SELECT w.k, w.total, w.p, coalesce(x.v, w.lo) AS v
    FROM wanted w LEFT JOIN ranked x ON x.k = w.k AND x.b = w.b AND x.i = w.r - w.below
),
picked AS (
    SELECT k, total, p, min(v) + (max(v) - min(v)) * ((total - 1) * p - floor((total - 1) * p)) AS v
    FROM found
    GROUP BY k, total, p
)
SELECT n.project, n.source, q.* EXCLUDE (k)
FROM (
    SELECT
        k,
        total::BIGINT AS runs,
        round(any_value(v) FILTER (WHERE p = 0.5), 3) AS p50_seconds,
        round(any_value(v) FILTER (WHERE p = 0.95), 3) AS p95_seconds,
        round(any_value(v) FILTER (WHERE p = 1.0), 3) AS max_seconds
    FROM picked
    GROUP BY k, total
) q JOIN (SELECT DISTINCT k, project, source FROM named) n USING (k)
ORDER BY p95_seconds DESC, project, source;
