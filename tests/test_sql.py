"""Ad-hoc SQL: one read-only SELECT over the store's tables, refused otherwise, and bounded."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.models import parse_event_page
from exporter.simulator import SimClock, World
from exporter.sql import SqlError, open_read_only, run_sql
from exporter.store import Store
from tests.factories import HOSTILE_SQL, PROJECT, SOURCE, T0, make_scenario, run, store_checksums


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "x.duckdb")
    s.ingest_page(PROJECT, SOURCE, [run(minutes=i) for i in range(30)], now=T0)
    s.ingest_page(PROJECT, SOURCE, [run(status="failed", minutes=40)], now=T0)
    yield s
    s.close()


def test_every_hostile_query_is_refused_and_changes_nothing(store: Store) -> None:
    before = store_checksums(store.cursor())
    for query in HOSTILE_SQL:
        with pytest.raises(SqlError):
            run_sql(store.cursor(), query, max_rows=10, timeout_seconds=10)
    assert store_checksums(store.cursor()) == before
    assert not any(Path("/tmp").glob("synthbrew-pwned*"))


def test_refusals_say_why(store: Store) -> None:
    def refusal(query: str) -> str:
        with pytest.raises(SqlError) as caught:
            run_sql(store.cursor(), query)
        return str(caught.value)

    assert refusal("DROP VIEW runs") == "only SELECT queries are allowed, not DROP"
    assert refusal("SELECT 1; SELECT 2") == "one statement at a time (2 given)"
    assert "read_csv() is not allowed" in refusal("SELECT * FROM read_csv('/etc/passwd')")
    assert "no table or view named '/etc/passwd'" in refusal("SELECT * FROM '/etc/passwd'")
    assert refusal("SELEC 1").startswith("not valid SQL: Parser Error")


def test_queries_read_the_documented_tables_views_and_ctes(store: Store) -> None:
    result = run_sql(
        store.cursor(),
        """WITH per AS (SELECT status, count(*) AS n FROM runs GROUP BY ALL)
           SELECT status, n, (SELECT count(*) FROM sources) AS sources FROM per ORDER BY 1""",
    )
    assert result.columns == ["status", "n", "sources"]
    assert result.rows == [("failed", 1, 0), ("success", 30, 0)]
    shown = run_sql(store.cursor(), "SELECT count(*) FROM information_schema.tables")
    assert shown.rows[0][0] > 0
    health = run_sql(
        store.cursor(),
        "SELECT runs, max_seconds FROM percentiles_by_source('duration', DATE '2000-01-01')",
    )
    assert [r[0] for r in health.rows] == [31]
    with pytest.raises(SqlError, match="measure is duration or queue_wait"):
        run_sql(store.cursor(), "SELECT * FROM percentiles_by_source('wait', DATE '2000-01-01')")


def test_rows_are_capped_and_the_result_says_so(store: Store) -> None:
    capped = run_sql(store.cursor(), "SELECT * FROM range(25)", max_rows=10)
    assert (len(capped.rows), capped.truncated) == (10, True)
    whole = run_sql(store.cursor(), "SELECT * FROM range(10)", max_rows=10)
    assert (len(whole.rows), whole.truncated) == (10, False)


def test_a_slow_query_is_interrupted_and_the_cursor_still_works(store: Store) -> None:
    with pytest.raises(SqlError, match=r"longer than 0.5s \(reports.sql_timeout_seconds\)"):
        run_sql(store.cursor(), "SELECT count(*) FROM range(1000000000000)", timeout_seconds=0.5)
    assert run_sql(store.cursor(), "SELECT count(*) FROM runs").rows == [(31,)]


def test_a_free_file_is_opened_read_only_without_external_access(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    Store(db).close()
    conn = open_read_only(db, "48MB", 1)
    try:
        for statement in (
            "SELECT * FROM read_csv('/etc/passwd')",
            "SET enable_external_access = true",
        ):
            with pytest.raises(Exception, match=r"(?i)permission|disabled|locked|configuration"):
                conn.execute(statement)
        assert run_sql(conn, "SELECT count(*) FROM runs").rows == [(0,)]
    finally:
        conn.close()
    assert os.access(db, os.R_OK)


def documented_examples() -> list[tuple[str, str]]:
    """Every ```sql block of docs/sql.md that is a query, with its heading."""
    text = (Path(__file__).parent.parent / "docs" / "sql.md").read_text()
    out = []
    for match in re.finditer(r"^### ([^\n]+)\n\n```sql\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        out.append((match.group(1), match.group(2)))
    return out


def test_every_documented_example_runs_on_generated_data(tmp_path: Path) -> None:
    clock = SimClock()
    clock.set(datetime.now(UTC).replace(microsecond=0))
    sources = [
        {"name": "orders", "failure_rate": 0.2, "runs_per_hour": 30},
        {"name": "customers", "regenerate_share": 0.3, "runs_per_hour": 12},
        {"name": "exports", "runs_per_hour": 6, "duration_seconds": 3600},  # some in flight
        {"name": "invoices", "runs_per_hour": 0.001},  # nothing finished lately
        {"name": "archive", "runs_per_hour": 1},  # 200 runs: eight days, a Monday among them
    ]
    world = World(make_scenario(sources), clock)
    store = Store(tmp_path / "x.duckdb")
    try:
        names = [(p.id, s.id, p.name, s.name) for p in world.scenario.projects for s in p.sources]
        store.sync_sources(names)
        for state in world.sources.values():
            page = parse_event_page(json.dumps(world.page(state, 200)))
            store.ingest_page(state.project.id, state.id, page.events, now=clock.now())
        examples = documented_examples()
        assert len(examples) >= 12
        answered = 0
        for title, query in examples:
            result = run_sql(store.cursor(), query, max_rows=1000, timeout_seconds=30)
            assert result.columns, title
            answered += bool(result.rows)
        # all but the billing window of the 3rd to the 17th and stuck runs, which depend on
        # the day the suite runs and on runs leaving the window
        assert answered >= len(examples) - 2, "the generated data exercises nearly every example"
    finally:
        store.close()
