"""``synthbrew-exporter regenerate`` end to end against the simulator."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml

from tests.factories import EXE, config_data, make_scenario
from tests.runners import Sim, exporter, wait_for

pytestmark = pytest.mark.e2e
FAST = {"queue_wait_seconds": 0.2, "duration_seconds": 0.3}


@pytest.fixture
def world(start_sim: Callable[..., Sim], tmp_path: Path) -> tuple[Sim, Path]:
    sim = start_sim(
        make_scenario(
            [
                {"name": "queued", **FAST, "failure_rate": 0.0},
                {"name": "doomed", **FAST, "failure_rate": 1.0},
                {"name": "inline", "execution_mode": "inline", "failure_rate": 0.0},
                {"name": "slow", "duration_seconds": 3600},
                {"name": "gone", "faults": {"status": 404}},
            ]
        )
    )
    sim.clock.resume()
    data = config_data(sim, retry={"attempts": 1})
    data["database"] = {"path": str(tmp_path / "x.duckdb")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return sim, path


def regenerate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, "regenerate", "--config", str(config), "--project", "shop", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stored(config: Path) -> dict[str, str]:
    db = yaml.safe_load(config.read_text())["database"]["path"]
    conn = duckdb.connect(db, read_only=True)
    try:
        return {str(i): s for i, s in conn.execute("SELECT id, status FROM events").fetchall()}
    finally:
        conn.close()


def test_queue_mode_success_is_followed_and_stored(world: tuple[Sim, Path]) -> None:
    sim, config = world
    result = regenerate(config, "--source", "queued", "--wait", "--seed", "s1")
    assert result.returncode == 0, result.stderr
    assert "queued job: job-" in result.stdout
    assert "status:     success" in result.stdout
    assert "billable:" in result.stdout
    run = sim.state("shop", "queued").manual[-1]
    assert sim.state("shop", "queued").seed == "s1"
    assert stored(config)[str(run.id)] == "success", "metrics and reports see it at once"


def test_failed_run_exits_1_with_its_error(world: tuple[Sim, Path]) -> None:
    _, config = world
    result = regenerate(config, "--source", "doomed", "--wait", "--format", "json")
    assert result.returncode == 1
    answer: dict[str, Any] = json.loads(result.stdout)
    assert answer["run"]["status"] == "failed"
    assert answer["run"]["errorMessage"]
    assert answer["mode"] == "queue"


def test_inline_mode(world: tuple[Sim, Path]) -> None:
    sim, config = world
    result = regenerate(config, "--source", str(sim.ids("shop", "inline")[1]), "--wait")
    assert result.returncode == 0, result.stderr
    assert "inline generation:" in result.stdout
    assert "status:     success" in result.stdout


def test_without_wait_prints_the_job_and_exits_0(world: tuple[Sim, Path]) -> None:
    _, config = world
    result = regenerate(
        config, "--source", "slow", "--clear-seed", "--generator-config", '{"rows": 10}'
    )
    assert result.returncode == 0, result.stderr
    assert "queued job:" in result.stdout


def test_timeout_exits_3(world: tuple[Sim, Path]) -> None:
    _, config = world
    result = regenerate(config, "--source", "slow", "--wait", "--timeout", "1")
    assert result.returncode == 3
    assert "did not finish within 1s" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "queued", "--seed", "a", "--clear-seed"], "exclude each other"),
        (["--source", "queued", "--schema-version-id", "nope"], "is not a UUID"),
        (["--source", "queued", "--generator-config", "{bad"], "not valid JSON"),
        (["--source", "queued", "--generator-config", "[1]"], "expected a JSON object"),
        (["--source", "queued", "--generator-config", "@/nonexistent.json"], "--generator-config"),
        (["--source", "nosuch"], "no such configured source"),
    ],
)
def test_bad_arguments_exit_2(world: tuple[Sim, Path], args: list[str], message: str) -> None:
    _, config = world
    result = regenerate(config, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_api_error_is_clear(world: tuple[Sim, Path]) -> None:
    _, config = world
    result = regenerate(config, "--source", "gone")
    assert result.returncode == 1
    assert "shop/gone: the API refused or failed (http_4xx)" in result.stderr
    assert "HTTP 404" in result.stderr


def test_run_is_stored_through_the_running_exporter(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "queued", **FAST, "failure_rate": 0.0}]))
    sim.clock.resume()
    series = (
        'synthbrew_generation_runs_total{project="shop",source="queued",'
        'status="success",trigger="regenerate"}'
    )
    with exporter(sim, tmp_path) as url:
        result = regenerate(tmp_path / "config.yaml", "--source", "queued", "--wait")
        # /metrics follows the store within metrics.refresh_seconds (default 5).
        wait_for(lambda: series in httpx.get(f"{url}/metrics").text, within=15)
    assert result.returncode == 0, result.stderr
    assert "the running exporter polled the source" in result.stderr
