"""What the store keeps beside the runs: a failed poll's outcome, the configured names of the
sources, and which monthly partitions ``export`` has written. Each function writes through the
connection it is given; the :class:`~exporter.store.store.Store` holds the lock and the
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import duckdb
import pyarrow as pa

from exporter.store.db import registered


def record_failure(
    conn: duckdb.DuckDBPyConnection,
    project_id: UUID,
    source_id: UUID,
    *,
    now: datetime,
    reason: str,
    message: str,
) -> None:
    conn.execute(
        """
        INSERT INTO poll_state AS s (project_id, source_id, last_poll_at, last_outcome,
            last_error_reason, last_error_message)
        VALUES ($project, $source, $now, 'error', $reason, $message)
        ON CONFLICT (project_id, source_id) DO UPDATE SET
            last_poll_at = excluded.last_poll_at,
            last_outcome = excluded.last_outcome,
            last_error_reason = excluded.last_error_reason,
            last_error_message = excluded.last_error_message
        """,
        {
            "project": project_id,
            "source": source_id,
            "now": now,
            "reason": reason,
            "message": message,
        },
    )


def sync_sources(
    conn: duckdb.DuckDBPyConnection, names: Sequence[tuple[UUID, UUID, str, str]]
) -> None:
    """Sources no longer configured keep their last names and are marked ``configured =
    false``: their history stays queryable."""
    table = pa.table(
        {
            "project_id": [str(n[0]) for n in names],
            "source_id": [str(n[1]) for n in names],
            "project_name": [n[2] for n in names],
            "source_name": [n[3] for n in names],
        }
    )
    with registered(conn, configured=table):
        conn.execute("UPDATE sources SET configured = false")
        conn.execute(
            """INSERT INTO sources
               SELECT project_id::UUID, source_id::UUID, project_name, source_name, true
               FROM configured
               ON CONFLICT (project_id, source_id) DO UPDATE SET
                   project_name = excluded.project_name,
                   source_name = excluded.source_name, configured = true"""
        )


def record_export(
    conn: duckdb.DuckDBPyConnection,
    project_id: UUID,
    source_id: UUID,
    month: str,
    fingerprint: str,
    now: datetime,
) -> None:
    conn.execute(
        """INSERT INTO export_state VALUES ($p, $s, $m, $f, $now)
           ON CONFLICT (project_id, source_id, month) DO UPDATE SET
               fingerprint = excluded.fingerprint, exported_at = excluded.exported_at""",
        {"p": project_id, "s": source_id, "m": month, "f": fingerprint, "now": now},
    )
