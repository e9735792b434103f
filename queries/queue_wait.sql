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
buckets AS (
    SELECT project_id, source_id, b, count(*) AS n FROM period GROUP BY ALL
),
placed AS (
    SELECT
        *,
        sum(n) OVER (PARTITION BY project_id, source_id ORDER BY b) - n AS below,
        sum(n) OVER (PARTITION BY project_id, source_id) AS total
    FROM buckets
),
wanted AS (
    SELECT project_id, source_id, b, below, total, p, r
    FROM placed, (VALUES (0.5), (0.95), (1.0)) q(p),
        unnest([floor((total - 1) * p), ceil((total - 1) * p)]::BIGINT[]) u(r)
    WHERE r >= below AND r < below + n
),
ranked AS (
    SELECT
        project_id,
        source_id,
        b,
        v,
        row_number() OVER (PARTITION BY project_id, source_id, b ORDER BY v) - 1 AS i
    FROM period SEMI JOIN (SELECT DISTINCT project_id, source_id, b FROM wanted) w
        USING (project_id, source_id, b)
),
picked AS (
    SELECT
        w.project_id,
        w.source_id,
        w.total,
        w.p,
        min(x.v) + (max(x.v) - min(x.v)) * ((w.total - 1) * w.p - floor((w.total - 1) * w.p)) AS v
    FROM wanted w JOIN ranked x ON x.project_id = w.project_id AND x.source_id = w.source_id
        AND x.b = w.b AND x.i = w.r - w.below
    GROUP BY w.project_id, w.source_id, w.total, w.p
)
SELECT
    coalesce(s.project_name, q.project_id::VARCHAR) AS project,
    coalesce(s.source_name, q.source_id::VARCHAR) AS source,
    q.* EXCLUDE (project_id, source_id)
FROM (
    SELECT
        project_id,
        source_id,
        total AS runs,
        round(any_value(v) FILTER (WHERE p = 0.5), 3) AS p50_seconds,
        round(any_value(v) FILTER (WHERE p = 0.95), 3) AS p95_seconds,
        round(any_value(v) FILTER (WHERE p = 1.0), 3) AS max_seconds
    FROM picked
    GROUP BY project_id, source_id, total
) q LEFT JOIN sources s USING (project_id, source_id)
ORDER BY p95_seconds DESC, project, source;
