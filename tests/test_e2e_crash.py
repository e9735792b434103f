"""Crash safety and storage failures, with the real console script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.factories import EXE, make_scenario
from tests.runners import Sim, collect, labels, scrape, status_of, wait_for, write_config

pytestmark = pytest.mark.e2e


def truth(sim: Sim) -> set[str]:
    now = sim.clock.now()
    ids: set[str] = set()
    for state in sim.world.sources.values():
        ids |= {str(r.id) for r in sim.world.runs(state, now, 200) if r.corrupt < 0}
    return ids


def test_sigkill_mid_ingestion_loses_and_doubles_nothing(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sources = [{"name": f"s{i:02}", "runs_per_hour": 600} for i in range(40)]
    sim = start_sim(make_scenario(sources))
    config, url = write_config(sim, tmp_path, collector={"interval_seconds": 1})
    proc = subprocess.Popen(
        [EXE, "run", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: status_of(f"{url}/readyz") == 200, within=120)
        committed = scrape(url)["synthbrew_generation_runs_total"]
        time.sleep(1.5)  # the next round of upserts is in flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    result = collect(config)
    assert result.returncode == 0, result.stderr
    conn = duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)
    try:
        rows = conn.execute("SELECT id::VARCHAR FROM events").fetchall()
        finished = conn.execute(
            "SELECT count(*) FROM events WHERE status IN ('success', 'failed')"
        ).fetchone()
    finally:
        conn.close()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "no event stored twice"
    assert set(ids) == truth(sim), "nothing committed was lost, nothing extra appeared"
    assert finished is not None
    assert finished[0] == sum(committed.values()), "every run counted once"


def config_with_db(sim: Sim, tmp_path: Path, db: Path) -> Path:
    config, _ = write_config(sim, tmp_path, database={"path": str(db)})
    return config


def assert_clear_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_corrupt_database_file(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    db = tmp_path / "corrupt.duckdb"
    db.write_bytes(os.urandom(64 * 1024))
    assert_clear_failure(collect(config_with_db(sim, tmp_path, db)), "error: ", str(db))


def test_unwritable_path(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    db = blocker / "x.duckdb"
    assert_clear_failure(collect(config_with_db(sim, tmp_path, db)), "cannot create")


def test_read_only_file_system(
    start_sim: Callable[..., Sim], tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    db = small_disk("ro,size=1m") / "x.duckdb"
    assert_clear_failure(collect(config_with_db(sim, tmp_path, db)), "error: ", str(db))


def test_full_disk(
    start_sim: Callable[..., Sim], tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    sim = start_sim(make_scenario([{"name": f"s{i}", "runs_per_hour": 600} for i in range(30)]))
    db = small_disk("size=600k") / "x.duckdb"
    result = collect(config_with_db(sim, tmp_path, db))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ": store: " in result.stderr, "the failed sources name the store as the reason"
    assert "No space left on device" in result.stderr


def test_secret_never_leaks(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    """A full cycle with known keys: logs, metrics, pages, check-config, errors."""
    main_key, project_key = "sb_api_MAINSECRET_4f7c1a", "sb_api_PROJECTSECRET_9e2b"
    scenario = make_scenario([{"name": "orders"}, {"name": "denied", "faults": {"status": 401}}])
    sim = start_sim(scenario)
    config, url = write_config(
        sim, tmp_path, api={"api_key": main_key}, collector={"interval_seconds": 1}
    )
    text = config.read_text().replace(
        "  name: shop\n", f"  name: shop\n  api_key: {project_key}\n", 1
    )
    config.write_text(text)
    seen = []
    proc = subprocess.Popen(
        [EXE, "--log-level", "debug", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: status_of(f"{url}/readyz") == 200, within=60)
        for path in ("/", "/metrics", "/api/reports", "/api/reports/recent_failures"):
            seen.append(httpx.get(f"{url}{path}").text)
        assert (
            scrape(url)["synthbrew_exporter_poll_errors_total"][
                labels(project="shop", source="denied", reason="auth")
            ]
            >= 1
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    seen += [out, err]
    checked = subprocess.run(
        [EXE, "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    seen += [checked.stdout, checked.stderr]
    failing = collect(config)
    seen += [failing.stdout, failing.stderr]
    assert "shop/denied: auth" in failing.stderr, "the error itself is reported"
    assert "HTTP 401" in err, "the debug log has the failures"
    for text in seen:
        assert "MAINSECRET" not in text
        assert "PROJECTSECRET" not in text
