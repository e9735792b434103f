"""``sql`` end to end: on a free file and through a running exporter (the same answer), hostile
queries refused both ways and over HTTP with the store unchanged, and a slow query that is
stopped while polls keep their schedule."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from tests.factories import EXE, HOSTILE_SQL, make_scenario, store_checksums
from tests.runners import Sim, collect, exporter, scrape, started, write_config

pytestmark = pytest.mark.e2e

QUERY = "SELECT source, status, count(*) AS runs FROM runs GROUP BY ALL ORDER BY ALL"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=120, check=False, input=stdin
    )


def test_the_same_answer_from_a_free_file_and_from_the_running_exporter(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}, {"name": "billing"}]))
    config, _ = write_config(sim, tmp_path, collector={"interval_seconds": 3600})
    assert collect(config).returncode == 0
    (tmp_path / "q.sql").write_text(QUERY)
    free = {
        "arg": cli("sql", QUERY, "--config", str(config), "--format", "csv"),
        "file": cli("sql", "--file", str(tmp_path / "q.sql"), "--config", str(config)),
        "stdin": cli("sql", "--config", str(config), "--format", "json", stdin=QUERY),
    }
    local_parquet = cli(
        "sql",
        QUERY,
        "--config",
        str(config),
        "--format",
        "parquet",
        "--output",
        str(tmp_path / "free.parquet"),
    )
    # polled once an hour, first after 19 minutes (its stable start offset): the store does not
    # change while this exporter holds it
    with exporter(sim, tmp_path, collector={"interval_seconds": 3600}):
        held = {
            "arg": cli("sql", QUERY, "--config", str(config), "--format", "csv"),
            "file": cli("sql", "--file", str(tmp_path / "q.sql"), "--config", str(config)),
            "stdin": cli("sql", "--config", str(config), "--format", "json", stdin=QUERY),
        }
        remote_parquet = cli(
            "sql",
            QUERY,
            "--config",
            str(config),
            "--format",
            "parquet",
            "--output",
            str(tmp_path / "held.parquet"),
        )
    for way, answer in free.items():
        assert answer.returncode == 0, answer.stderr
        assert held[way].returncode == 0, held[way].stderr
        assert held[way].stdout == answer.stdout, way
    assert free["arg"].stdout.splitlines()[0] == "source,status,runs"
    assert "orders" in free["file"].stdout
    assert local_parquet.returncode == remote_parquet.returncode == 0
    assert pq.read_table(tmp_path / "free.parquet").equals(pq.read_table(tmp_path / "held.parquet"))


def test_hostile_queries_are_refused_everywhere_and_change_nothing(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    config, _ = write_config(sim, tmp_path, collector={"interval_seconds": 3600})
    assert collect(config).returncode == 0
    with exporter(sim, tmp_path, collector={"interval_seconds": 3600}):
        pass  # what starting the exporter does to the store (retiring old runs) is done now
    db = tmp_path / "x.duckdb"
    before = _checksums(db)
    for query in HOSTILE_SQL:
        refused = cli("sql", query, "--database", str(db))
        assert refused.returncode == 2, (query, refused.stdout, refused.stderr)
        assert refused.stderr.startswith("error: "), refused.stderr
        assert "Traceback" not in refused.stderr
    with exporter(sim, tmp_path, collector={"interval_seconds": 3600}) as url:
        for query in HOSTILE_SQL:
            answer = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30)
            assert answer.status_code == 400, (query, answer.text)
            assert answer.json()["error"], query
            over_cli = cli("sql", query, "--config", str(config))
            assert over_cli.returncode == 2, (query, over_cli.stderr)
        bad = httpx.post(f"{url}/api/sql", content=b"not json", timeout=30)
        assert bad.status_code == 400
    assert _checksums(db) == before, "not a byte of content changed"
    assert not any(Path("/tmp").glob("synthbrew-pwned*"))


def _checksums(db: Path) -> dict[str, tuple[int, int]]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return store_checksums(conn)
    finally:
        conn.close()


def test_a_slow_query_is_stopped_and_polls_keep_their_schedule(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": f"s{i}"} for i in range(5)]))
    sections = {
        "collector": {"interval_seconds": 1},
        "metrics": {"refresh_seconds": 0.5},
        "reports": {"sql_timeout_seconds": 6},
    }
    with started(sim, tmp_path, **sections) as run:
        answers: list[httpx.Response] = []
        slow = "SELECT count(*) FROM range(100000000000) a WHERE a % 7 = 3"
        query = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{run.url}/api/sql", json={"sql": slow}, timeout=60)
            )
        )
        polls = "synthbrew_exporter_polls_total"
        before = sum(scrape(run.url)[polls].values())
        started_at = time.monotonic()
        query.start()
        time.sleep(5)
        during = sum(scrape(run.url)[polls].values())
        query.join()
        took = time.monotonic() - started_at
        capped = httpx.post(
            f"{run.url}/api/sql", json={"sql": "SELECT * FROM range(200000)"}, timeout=60
        ).json()
    (answer,) = answers
    assert answer.status_code == 400
    assert "longer than 6s (reports.sql_timeout_seconds)" in answer.json()["error"]
    assert 6 <= took < 20, "stopped at its timeout"
    assert during - before >= 5 * 3, "every source was polled meanwhile"
    assert len(capped["rows"]) == 100_000
    assert capped["truncated"] is True


def test_the_exported_views_file_opens_in_another_process_while_run_is_up(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}, {"name": "billing"}]))
    dataset = tmp_path / "dataset"
    config, _ = write_config(
        sim, tmp_path, collector={"interval_seconds": 3600}, export={"path": str(dataset)}
    )
    assert collect(config).returncode == 0
    with exporter(
        sim, tmp_path, collector={"interval_seconds": 3600}, export={"path": str(dataset)}
    ):
        exported = cli("export", "--config", str(config))
        assert exported.returncode == 0, exported.stderr
        live = cli("sql", QUERY, "--config", str(config), "--format", "json")
        # a separate process, as a BI tool would be, while the exporter holds the live store
        script = (
            "import duckdb, json, sys\n"
            "conn = duckdb.connect(sys.argv[1], read_only=True)\n"
            "result = conn.execute(sys.argv[2])\n"
            "names = [d[0] for d in result.description]\n"
            "print(json.dumps([dict(zip(names, row)) for row in result.fetchall()]))\n"
        )
        elsewhere = subprocess.run(
            [sys.executable, "-c", script, str(dataset / "synthbrew.duckdb"), QUERY],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert live.returncode == 0, live.stderr
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout) == json.loads(live.stdout)
    assert json.loads(live.stdout), "the store has runs"
