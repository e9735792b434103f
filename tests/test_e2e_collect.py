"""The real console script against the simulator: ``collect`` and ``run`` end to end."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.factories import EXE, make_scenario
from tests.runners import Sim, collect, free_port, write_config

pytestmark = pytest.mark.e2e


def config_for(sim: Sim, tmp_path: Path, **collector: Any) -> Path:
    path, _ = write_config(
        sim, tmp_path, api={"timeout_seconds": 1, "retry": {"attempts": 1}}, collector=collector
    )
    return path


def db_events(tmp_path: Path) -> dict[Any, str]:
    conn = duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)
    try:
        return dict(conn.execute("SELECT id, status FROM events").fetchall())
    finally:
        conn.close()


def all_truth(sim: Sim, *names: str) -> dict[Any, str]:
    now = sim.clock.now()
    out = {}
    for name in names:
        state = sim.state("shop", name)
        out |= {r.id: r.status_at(now) for r in sim.world.runs(state, now)}
    return out


def test_collect_exits_0_when_every_source_was_polled(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}, {"name": "customers"}]))
    result = collect(config_for(sim, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "2/2 source(s) polled" in result.stderr
    assert db_events(tmp_path) == all_truth(sim, "orders", "customers")


def test_collect_exits_1_naming_the_failed_source(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(
        make_scenario([{"name": "orders"}, {"name": "broken", "faults": {"status": 500}}])
    )
    result = collect(config_for(sim, tmp_path))
    assert result.returncode == 1
    assert "FAILED  shop/broken: http_5xx" in result.stderr
    assert "Traceback" not in result.stderr
    assert db_events(tmp_path) == all_truth(sim, "orders"), "the healthy source was stored"


def start_run(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, "run", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_during_a_poll_loses_nothing(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario([{"name": "slow", "faults": {"latency_ms": 700}}]))
    config = config_for(sim, tmp_path, interval_seconds=1)
    proc = start_run(config)
    try:
        deadline = time.monotonic() + 30
        while sim.state("shop", "slow").requests == 0:
            assert time.monotonic() < deadline, "the exporter never polled"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err
    assert db_events(tmp_path) == all_truth(sim, "slow")


def test_second_writer_gets_a_clear_lock_error(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    config = config_for(sim, tmp_path, interval_seconds=1)
    proc = start_run(config)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "x.duckdb").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        result = subprocess.run(
            [EXE, "collect", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert result.returncode == 1
    assert "lock" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_run_demo_prints_usage_first_and_serves_history_metrics_and_prometheus(
    tmp_path: Path,
) -> None:
    db = tmp_path / "demo.duckdb"
    prometheus = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            EXE,
            "run",
            "--demo",
            "--database",
            str(db),
            "--simulator-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            prometheus,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(8)]
        assert lines[0].startswith("history:    ")  # a month of runs before the first poll
        urls = [word for line in lines for word in line.split() if "://" in word]
        assert urls[0].endswith("/usage"), "the first URL printed is the usage page"
        assert lines[1].startswith("usage:      http://127.0.0.1:")
        url = lines[1].split()[1].removesuffix("/usage")
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the demo never became ready"
            time.sleep(0.2)
        metrics = httpx.get(f"{url}/metrics").text
        usage = httpx.get(f"{url}/usage/billable.csv?period=30d").text.splitlines()
        prom_line = next(line for line in lines if line.startswith("prometheus:"))
        if shutil.which("prometheus"):
            alerts = prom_line.split()[1]
            assert alerts.startswith(f"http://{prometheus}/")
            assert alerts.endswith("alerts"), alerts
            assert httpx.get(alerts, timeout=10).status_code == 200, "the printed page exists"
            assert_prometheus_scrapes(f"http://{prometheus}")
        else:
            assert "not installed" in prom_line
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert 'synthbrew_generation_runs_total{project="shop",source="orders"' in metrics
    assert len(usage) == 31  # a header and 30 days ...
    assert all(int(line.rsplit(",", 1)[1]) > 0 for line in usage[1:])  # ... each with usage
    assert db_events_at(db) > 100_000


def assert_prometheus_scrapes(prometheus: str) -> None:
    """The demo's Prometheus loaded the project's rules and scrapes the demo exporter."""
    deadline = time.monotonic() + 60
    while True:
        try:
            targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
            rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        except httpx.TransportError:
            targets, rules = [], []
        if targets and targets[0]["health"] == "up" and rules:
            break
        assert time.monotonic() < deadline, f"prometheus never scraped the demo: {targets}"
        time.sleep(1)
    names = {rule["name"] for group in rules for rule in group["rules"]}
    assert "SynthbrewExporterStoreNotWritable" in names
    assert "synthbrew:generation_billable_rows:increase1h" in names


def db_events_at(db: Path) -> int:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()
