"""``report`` and ``export`` while ``run`` holds the database: the HTTP fallback, end to end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
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


def test_errors_keep_their_kind_over_http_and_through_the_cli(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """Each kind of error (exporter.errors) answers its own status over /api, and the CLI asking
    a running exporter exits as it would on the file; a server that is not an exporter is
    "cannot reach", not the user's mistake."""
    sim = start_sim(make_scenario([{"name": "orders"}]))
    with exporter(sim, tmp_path) as url:  # no export.path
        wait_for(lambda: status_of(f"{url}/readyz") == 200)
        unknown_report = httpx.get(f"{url}/api/reports/nosuch", timeout=30)
        bad_param = httpx.get(f"{url}/api/reports/usage_daily?tz=Nowhere/X", timeout=30)
        no_export = httpx.post(f"{url}/api/export", timeout=30)
        unknown_source = httpx.post(f"{url}/api/poll/shop/nosuch", timeout=30)
        by_id = httpx.post(f"{url}/api/poll/shop/{sim.ids('shop', 'orders')[1]}", timeout=30)
        listing = httpx.get(f"{url}/api/reports", timeout=30).json()["reports"]
        cli_unknown = cli("report", "nosuch", "--url", url)
        cli_bad = cli("report", "usage_daily", "--url", url, "--param", "tz=Nowhere/X")
    stray = cli("report", "usage_daily", "--url", sim.url)
    assert (unknown_report.status_code, bad_param.status_code) == (404, 400)
    assert "no report named 'nosuch'" in unknown_report.json()["error"]
    assert (no_export.status_code, no_export.json()) == (
        409,
        {"error": "export.path is not configured"},
    )
    assert unknown_source.status_code == 404
    assert "no such configured source" in unknown_source.json()["error"]
    assert by_id.status_code == 200, "a source by id, as regenerate --source takes it"
    assert listing
    assert all(set(r) == {"name", "title", "description", "params"} for r in listing)
    assert (cli_unknown.returncode, cli_bad.returncode) == (2, 2)
    assert "no report named 'nosuch'" in cli_unknown.stderr
    assert "not a valid tz" in cli_bad.stderr
    assert stray.returncode == 1, stray.stderr
    assert "HTTP 404" in stray.stderr
    assert sim.url in stray.stderr
