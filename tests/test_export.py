"""Parquet export: read back by DuckDB row for row, incremental, atomic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from exporter.export import export_parquet
from exporter.store import Store
from exporter.targets import targets
from tests.factories import EPOCH, make_scenario, target
from tests.runners import Sim, running

NOW = EPOCH.replace(day=2, hour=14)


def read_back(db: Path, root: Path) -> tuple[int, int, int]:
    """(rows in the dataset, rows in the database, rows that differ either way)."""
    conn = duckdb.connect(str(db), read_only=True)
    conn.execute("SET TimeZone = 'UTC'")
    dataset = f"(SELECT * EXCLUDE (project, month) FROM read_parquet('{root}/events/**/*.parquet',"
    dataset += " hive_partitioning = true))"
    database = "(SELECT * EXCLUDE (project) FROM runs)"

    def count(sql: str) -> int:
        row = conn.execute(f"SELECT count(*) FROM {sql}").fetchone()
        assert row is not None
        return int(row[0])

    try:
        return (
            count(dataset),
            count(database),
            count(f"({dataset} EXCEPT ALL {database})")
            + count(f"({database} EXCEPT ALL {dataset})"),
        )
    finally:
        conn.close()


async def test_export_matches_the_database_row_for_row(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}, {"name": "billing"}]), now=NOW)
    db, root = tmp_path / "x.duckdb", tmp_path / "dataset"
    async with running(sim, db) as (c, store, _):
        store.sync_sources([(t.project.id, t.source.id, *t.labels) for t in targets(c.config)])
        for name in ("orders", "billing"):
            await c.poll(target(c, name))
        first = export_parquet(store, root, datetime.now(UTC))
        again = export_parquet(store, root, datetime.now(UTC))
        sim.clock.advance(600)
        await c.poll(target(c, "orders"))
        third = export_parquet(store, root, datetime.now(UTC))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert first.files_written == 2
    assert files[0].startswith("events/project=shop/month=2026-11/source-")
    assert again.files_written == 0, "nothing changed, nothing rewritten"
    assert again.files_unchanged == 2
    assert third.files_written == 1, "only the source that changed"
    assert not list(root.rglob("*.tmp")), "no half-written file left behind"
    n_dataset, n_db, differing = read_back(db, root)
    assert n_dataset == n_db > 0
    assert differing == 0
    assert views_match(db, root / "synthbrew.duckdb")


def views_match(db: Path, views: Path) -> bool:
    """The views file's ``runs`` has the store's columns, in order, and the same rows."""
    live = duckdb.connect(str(db), read_only=True)
    try:
        columns = [d[0] for d in live.execute("SELECT * FROM runs LIMIT 0").description or []]
        rows = live.execute("SELECT * FROM runs ORDER BY id").fetchall()
    finally:
        live.close()
    copy = duckdb.connect(str(views), read_only=True)
    try:
        result = copy.execute("SELECT * FROM runs ORDER BY id")
        same_columns = [d[0] for d in result.description or []] == columns
        return same_columns and result.fetchall() == rows
    finally:
        copy.close()


def test_export_of_an_empty_database(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.duckdb")
    try:
        result = export_parquet(store, tmp_path / "out", datetime.now(UTC))
    finally:
        store.close()
    assert (result.files_written, result.rows_written) == (0, 0)
