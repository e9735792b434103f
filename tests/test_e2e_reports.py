"""``report`` and ``export`` while ``run`` holds the database: the HTTP fallback, end to end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from exporter.reports import load_reports, run_report
from tests.factories import EXE, make_scenario
from tests.runners import Sim, exporter, status_of, wait_for

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, check=False)


def test_report_and_export_work_while_run_is_up(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}, {"name": "billing"}]))
    dataset = tmp_path / "dataset"
    config = tmp_path / "config.yaml"
    with exporter(sim, tmp_path, export={"path": str(dataset)}) as url:
        wait_for(lambda: status_of(f"{url}/readyz") == 200)
        listing = cli("report", "--config", str(config))
        daily = cli(
            "report",
            "usage_daily",
            "--config",
            str(config),
            "--format",
            "json",
            "--param",
            "since=2026-01-01",
            "--param",
            "until=2026-12-31",
        )
        by_url = cli(
            "report", "failure_rate", "--url", url, "--format", "csv", "--param", "since=2026-01-01"
        )
        bad = cli("report", "usage_daily", "--config", str(config), "--param", "tz=Nowhere/X")
        locked = cli("report", "usage_daily", "--database", str(tmp_path / "x.duckdb"))
        exported = cli("export", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    assert "usage_daily" in listing.stdout
    assert daily.returncode == 0, daily.stderr
    assert by_url.returncode == 0, by_url.stderr
    assert bad.returncode == 2
    assert "not a valid tz" in bad.stderr
    assert locked.returncode == 1
    assert "locked by a running exporter" in locked.stderr
    assert exported.returncode == 0, exported.stderr
    assert "2 file(s) written" in exported.stdout

    conn = duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)
    try:
        report = load_reports()["usage_daily"]
        params = report.bind({"since": "2026-01-01", "until": "2026-12-31"})
        direct = run_report(conn, report, params).records()
    finally:
        conn.close()
    assert json.loads(daily.stdout) == direct
    assert direct, "the report has rows"
    assert by_url.stdout.startswith("project,source,trigger,runs,failed,failure_rate")
    assert len(list(dataset.rglob("*.parquet"))) == 2


def test_report_without_a_database_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("report", "usage_daily", "--database", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2
    assert "no such database" in result.stderr
    assert "Traceback" not in result.stderr
