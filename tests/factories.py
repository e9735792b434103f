"""Builders of test data, and readers of what a test stored — nothing here starts a server,
a process or a poller (those are in ``tests/runners.py``).

What is here: runs as the API sends them (:func:`run`, around :data:`T0`, for :data:`PROJECT`
and :data:`SOURCE`); simulator scenarios (:func:`make_scenario`, from :data:`EPOCH`) and configs
(:func:`config_data` for a running simulator, :data:`GOOD` and :func:`good_config_data` for a
standalone one, :data:`API_KEY`); the path of the console script (:data:`EXE`); readers of a
store, of a simulator's ground truth and of a poller's targets (:func:`stored`, :func:`truth`,
:func:`target`, :func:`recount_runs`, :func:`store_checksums`); queries ad-hoc SQL must refuse
(:data:`HOSTILE_SQL`).

Test modules import shared helpers from here and from ``tests/runners.py``, never from each
other nor from ``tests/conftest.py`` (which holds only fixtures).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import duckdb
import yaml

from exporter.models import GenerationEvent
from exporter.simulator import Scenario
from exporter.targets import targets

if TYPE_CHECKING:
    from exporter.poller import Poller
    from exporter.store import Store
    from tests.runners import Sim

# The console script of the venv running the tests.
EXE = str(Path(sys.executable).with_name("synthbrew-exporter"))

# --- simulator scenarios and configs ---------------------------------------------------------

API_KEY = "sb_api_test_0123456789abcdef"
EPOCH = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_scenario(sources: list[dict[str, Any]], **extra: Any) -> Scenario:
    return Scenario.model_validate(
        {"seed": 7, "epoch": EPOCH, "projects": [{"name": "shop", "sources": sources}], **extra}
    )


def config_data(sim: Sim, **api: Any) -> dict[str, Any]:
    return {
        "api": {"base_url": sim.base_url, "api_key": API_KEY, **api},
        "projects": [
            {
                "id": str(p.id),
                "name": p.name,
                "sources": [{"id": str(s.id), "name": s.name} for s in p.sources],
            }
            for p in sim.world.scenario.projects
        ],
    }


# A valid config file, as text, for no simulator in particular; P1, S1 and S2 are its ids (S2
# has no name, so its name is its id).
P1 = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
S1 = "5f0c3cc0-0d44-4b50-8888-8dd25736052b"
S2 = "6a0c3cc0-0d44-4b50-8888-8dd25736052c"
GOOD = f"""
api:
  base_url: https://synthbrew.example/api
  api_key: ${{SYNTHBREW_API_KEY}}
projects:
  - id: {P1}
    name: shop
    sources:
      - id: {S1}
        name: orders
        interval_seconds: 30
      - id: {S2}
"""


def good_config_data(**changes: Any) -> dict[str, Any]:
    """:data:`GOOD` as parsed YAML, with a literal API key; ``changes`` set values by dotted
    path (``"projects.0.sources.1.name"``)."""
    base: dict[str, Any] = yaml.safe_load(GOOD)
    base["api"]["api_key"] = "sb_api_k"
    for dotted, value in changes.items():
        node: Any = base
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value
    return base


# --- runs as the API sends them --------------------------------------------------------------

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
# The finished rule is written out here on purpose, not taken from exporter.store.schema: a
# recount that shares the code under test would agree with any mistake in it.
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


# --- readers of a store, a simulator and a poller ----------------------------------------------


def stored(store: Store, sql: str = "SELECT id, status FROM events") -> dict[Any, Any]:
    """The stored runs, as a dict of the query's two columns (by default id -> status)."""
    return dict(store.cursor().execute(sql).fetchall())


def truth(sim: Sim, source: str) -> dict[Any, str]:
    """The simulator's ground truth for a source of project "shop": run id -> status now."""
    state = sim.state("shop", source)
    now = sim.clock.now()
    return {r.id: r.status_at(now) for r in sim.world.runs(state, now)}


def target(c: Poller, name: str) -> Any:
    """The poller's target for the source called ``name``."""
    return next(t for t in targets(c.config) if t.source.name == name)
