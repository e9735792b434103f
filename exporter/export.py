"""Parquet export: the event history as a Hive-partitioned dataset, written incrementally.

Layout: ``ROOT/events/project=NAME/month=YYYY-MM/source-SOURCE_ID.parquet`` (month of
``createdAt``, UTC). One file per source and month means replicas that shard sources never
write the same file, so their exports form one dataset. A file is rewritten only when its rows
changed (a fingerprint per file is kept in ``export_state``), and always through a temporary file
and an atomic rename, so a reader never sees half a file.

Beside it, ``ROOT/synthbrew.duckdb`` holds one view, ``runs``, over the dataset with the live
store's ``runs`` columns: ``duckdb ROOT/synthbrew.duckdb``, pandas, DBeaver or Grafana's DuckDB
data source query all of history with no lock on the live store.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from uuid import UUID

import duckdb

from exporter.store import Store

log = logging.getLogger(__name__)

_PARTITIONS = """
SELECT project_id, source_id, project, strftime(created_at, '%Y-%m') AS month,
       count(*) || ':' || max(coalesce(updated_at, created_at))::VARCHAR || ':'
           || bit_xor(hash(id, status, coalesce(updated_at, created_at), stale_since))::VARCHAR
FROM runs GROUP BY ALL
"""
_ROWS = """
SELECT * EXCLUDE (project) FROM runs
WHERE project_id = $project AND source_id = $source AND strftime(created_at, '%Y-%m') = $month
ORDER BY queued_at, id
"""


VIEWS = "synthbrew.duckdb"
_COLUMNS = """
SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'runs' ORDER BY column_index
"""


def write_views(root: Path, columns: list[tuple[str, str]]) -> None:
    """``ROOT/synthbrew.duckdb``: the ``runs`` view over the dataset, with the store's columns
    in its order and of its types (Parquet keeps UUIDs and JSON as text; the partition's
    ``project`` is URL-quoted in its directory name). Paths are absolute: the file is opened
    from anywhere. Replaced atomically, like the Parquet files."""
    files = sorted(root.glob("events/*/*/*.parquet"))
    if not files:
        return
    source = (root / "events" / "**" / "*.parquet").resolve()
    select = ", ".join(
        f"CAST({'url_decode(project)' if name == 'project' else _quoted(name)} AS {kind})"
        f" AS {_quoted(name)}"
        for name, kind in columns
    )
    tmp = root / f".{VIEWS}.tmp"
    tmp.unlink(missing_ok=True)
    conn = duckdb.connect(str(tmp))
    try:
        conn.execute(
            f"CREATE VIEW runs AS SELECT {select} FROM read_parquet("
            f"'{str(source).replace(chr(39), chr(39) * 2)}', hive_partitioning = true)"
        )
    finally:
        conn.close()
    os.replace(tmp, root / VIEWS)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ExportResult:
    files_written: int
    files_unchanged: int
    rows_written: int
    root: str = ""  # the dataset directory as its writer names it ("" from an older exporter)


def partition_file(root: Path, project: str, month: str, source_id: UUID) -> Path:
    return (
        root
        / "events"
        / f"project={quote(project, safe='')}"
        / f"month={month}"
        / f"source-{source_id}.parquet"
    )


def export_parquet(store: Store, root: Path, now: datetime) -> ExportResult:
    """Blocking: call it off the event loop."""
    # Imported here: pyarrow's Parquet writer and the file systems it loads are 10 MB of RSS
    # that a `run` without `export.path` would carry for nothing.
    import pyarrow.parquet as pq

    cur = store.cursor()
    done = store.export_fingerprints()
    written = unchanged = rows = 0
    for project_id, source_id, project, month, fingerprint in cur.execute(_PARTITIONS).fetchall():
        target = partition_file(root, project, month, source_id)
        if done.get((project_id, source_id, month)) == fingerprint and target.exists():
            unchanged += 1
            continue
        table = cur.sql(
            _ROWS, params={"project": project_id, "source": source_id, "month": month}
        ).to_arrow_table()
        assert table is not None, "a SELECT always yields a table"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
        store.record_export(project_id, source_id, month, fingerprint, now)
        written += 1
        rows += table.num_rows
    if written or not (root / VIEWS).exists():
        write_views(root, [(c, t) for c, t in cur.execute(_COLUMNS).fetchall()])
    log.info("export to %s: %d file(s) written, %d unchanged", root, written, unchanged)
    return ExportResult(
        root=str(root), files_written=written, files_unchanged=unchanged, rows_written=rows
    )
