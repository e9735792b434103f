"""Builders shared by the tests: runs as the API sends them, and recounts over a stored database.

Test modules import from here, never from each other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import duckdb

from exporter.models import GenerationEvent

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PROJECT, SOURCE = uuid4(), uuid4()


def run(run_id: UUID | None = None, *, minutes: int = 0, **fields: Any) -> GenerationEvent:
    """A finished, successful run queued ``minutes`` after T0; ``fields`` override (camelCase)."""
    at = T0 + timedelta(minutes=minutes)
    base: dict[str, Any] = {
        "id": str(run_id or uuid4()),
        "sourceId": str(SOURCE),
        "projectId": str(PROJECT),
        "trigger": "populate",
        "status": "success",
        "queuedAt": at.isoformat(),
        "startedAt": at.isoformat(),
        "finishedAt": (at + timedelta(seconds=30)).isoformat(),
        "durationMs": 30_000,
        "totalInsertedRows": 10,
        "billableRows": 8,
        "createdAt": at.isoformat(),
        "updatedAt": (at + timedelta(seconds=30)).isoformat(),
    }
    base.update(fields)
    return GenerationEvent.model_validate(base)


# What the v2 exporter exposed: every counter recounted from the stored runs on each scrape.
FINISHED = "(status IN ('success', 'failed') OR finished_at IS NOT NULL)"
RECOUNT_RUNS = f"""
SELECT project_id, source_id, trigger, status, count(*), sum(billable_rows),
       sum(total_inserted_rows)
FROM events WHERE {FINISHED} GROUP BY ALL
"""


def recount_runs(conn: duckdb.DuckDBPyConnection) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    """(project, source, trigger, status) -> (runs, billable rows, inserted rows) of the
    finished runs stored now."""
    return {
        tuple(r[:4]): (int(r[4]), int(r[5]), int(r[6]))
        for r in conn.execute(RECOUNT_RUNS).fetchall()
    }


# Queries that must be refused by ad-hoc SQL, one of each kind: writes and DDL, files, other
# databases, extensions, settings, a second statement, state-changing functions.
HOSTILE_SQL = [
    "INSERT INTO sources VALUES (uuid(), uuid(), 'x', 'y', true)",
    "DELETE FROM events_live",
    "UPDATE sources SET configured = false",
    "DROP VIEW runs",
    "CREATE TABLE x AS SELECT 1",
    "ALTER TABLE sources RENAME TO s2",
    "COPY (SELECT 1) TO '/tmp/synthbrew-pwned.csv'",
    "COPY sources FROM '/etc/passwd'",
    "EXPORT DATABASE '/tmp/synthbrew-pwned'",
    "ATTACH '/tmp/synthbrew-other.duckdb' AS other",
    "DETACH memory",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET memory_limit = '10GB'",
    "RESET memory_limit",
    "PRAGMA threads = 1",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "SELECT 1; DROP VIEW runs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_parquet('/tmp/*.parquet')",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM sqlite_scan('/tmp/x.db', 't')",
    "WITH x AS (SELECT * FROM read_json_auto('/etc/x.json')) SELECT * FROM x",
    "SELECT (SELECT count(*) FROM read_csv_auto('/etc/passwd'))",
    "SELECT * FROM other.main.runs",
    "SELECT nextval('s')",
    "SELECT * FROM os",
]


def store_checksums(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """Every table of a store: its row count and a hash of its content."""
    tables = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary"
    ).fetchall()
    out = {}
    for (table,) in tables:
        count, digest = conn.execute(f'SELECT count(*), sum(hash(t)) FROM "{table}" t').fetchall()[
            0
        ]
        out[table] = (int(count), int(digest or 0))
    return out
