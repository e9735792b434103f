"""Faults inside the exporter, with the real console script, a real DuckDB file and the
simulator: each fault is logged with its real cause a few times (not once per poll), moves a
metric and /readyz, heals without a restart, and loses or counts twice nothing committed.

Each test prints how long recovery took once the cause was gone (``pytest -s`` shows it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml

from exporter.simulator import SimClock, SimulatorApp, World
from exporter.store.db import MEMORY_LIMIT
from tests.factories import EPOCH, EXE, make_scenario
from tests.runners import Running, Sim, free_port, scrape, started, status_of, wait_for

pytestmark = pytest.mark.e2e

FAST = {"collector": {"interval_seconds": 1}, "metrics": {"refresh_seconds": 0.5}}
Metrics = dict[str, dict[frozenset[tuple[str, str]], float]]
# A family of each store-backed collector that reads the database.
FAMILIES = {
    "runs": "synthbrew_generation_runs_total",
    "rows": "synthbrew_generation_billable_rows_total",
    "in_progress": "synthbrew_generation_in_progress",
    "last_finished": "synthbrew_generation_last_finished_timestamp_seconds",
    "billing": "synthbrew_billable_rows_month_to_date",
    "store_tables": "synthbrew_exporter_store_runs",
}


def sources(count: int) -> list[dict[str, Any]]:
    return [{"name": f"s{i:02}", "runs_per_hour": 600} for i in range(count)]


def total(metrics: Metrics, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for k, v in metrics.get(name, {}).items() if want <= k)


def window_ids(world: World) -> set[str]:
    """Every run the simulator shows right now: the newest 200 of each source."""
    now = world.clock.now()
    ids: set[str] = set()
    for state in world.sources.values():
        ids |= {str(r.id) for r in world.runs(state, now, 200) if r.corrupt < 0}
    return ids


def writable(run: Running) -> bool:
    return total(scrape(run.url), "synthbrew_exporter_store_writable") == 1


def failing(run: Running, cause: str) -> bool:
    ready = httpx.get(f"{run.url}/readyz", timeout=10)
    return not writable(run) and ready.status_code == 503 and cause in ready.json()["detail"]


def failed_polls(run: Running, at_least: int, reason: str = "store") -> None:
    """Wait until the fault has failed this many polls (polls slow down when sources are
    quiet, so a fixed wait would see a varying number)."""
    errors = "synthbrew_exporter_poll_errors_total"
    wait_for(lambda: total(scrape(run.url), errors, reason=reason) >= at_least, within=60)


def settled(run: Running) -> Metrics:
    """The metrics once every source has polled successfully again and the frozen clock left
    nothing new to store."""
    wait_for(lambda: min(scrape(run.url)["synthbrew_exporter_source_up"].values()) == 1, within=60)
    time.sleep(2.5)  # a full round of polls after the last change
    return scrape(run.url)


def assert_intact(db: Path, seen: set[str], metrics: Metrics) -> None:
    """Every run the simulator showed is stored once, and the counters count each once."""
    conn = duckdb.connect(str(db), read_only=True)
    try:
        ids = [r[0] for r in conn.execute("SELECT id::VARCHAR FROM events").fetchall()]
        finished = conn.execute("SELECT count(*) FROM runs WHERE finished").fetchall()[0][0]
    finally:
        conn.close()
    assert len(ids) == len(set(ids)), "no run stored twice"
    assert set(ids) == seen, "nothing committed was lost, nothing extra appeared"
    counted = total(metrics, "synthbrew_generation_runs_total") - total(
        metrics, "synthbrew_generation_runs_retracted_total"
    )
    assert counted == finished, "every finished run counted once"


def advance(sim: Sim, minutes: float) -> None:
    sim.clock.set(sim.clock.now() + timedelta(minutes=minutes))


def fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_heals_once_space_is_freed(
    start_sim: Callable[..., Sim], tmp_path: Path, small_disk: Callable[[str], Path]
) -> None:
    sim = start_sim(make_scenario(sources(20)))
    disk = small_disk("size=16m")
    db = disk / "x.duckdb"
    seen = window_ids(sim.world)
    with started(sim, tmp_path, database={"path": str(db)}, **FAST) as run:
        filler = fill(disk)
        advance(sim, 5)
        seen |= window_ids(sim.world)
        wait_for(lambda: failing(run, "No space left on device"), within=60)
        failed_polls(run, at_least=40)
        during = scrape(run.url)
        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: writable(run) and status_of(f"{run.url}/readyz") == 200, within=60)
        print(f"\nfull disk: recovered {time.monotonic() - freed:.1f}s after space was freed")
        final = settled(run)
        lines = run.log_lines("No space left on device")
    failures = total(during, "synthbrew_exporter_poll_errors_total", reason="store")
    assert failures >= 40, "every source's polls failed for a few rounds"
    assert 1 <= len(lines) <= 3, "the cause is logged, not once per failed poll"
    assert "database write failed" in lines[0]
    assert total(final, "synthbrew_exporter_store_write_errors_total") >= 1
    assert_intact(db, seen, final)


def test_a_read_only_database_directory_heals_once_writable(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """As root the permission bits do not bind, so the exporter runs without the capability
    that bypasses them (setpriv), as a service user would. The first 4,000 runs are too few to
    retire; 4,000 more while the directory is read-only are enough, and retiring checkpoints,
    which must remove the WAL: DuckDB then invalidates the database, and the store reopens it
    once the directory is writable again."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    if os.geteuid() != 0:
        pytest.skip("runs as root without CAP_DAC_OVERRIDE; not root here")
    drop = [setpriv, "--inh-caps=-dac_override,-dac_read_search"]
    drop += ["--bounding-set=-dac_override,-dac_read_search", "--"]
    sim = start_sim(make_scenario(sources(20)))
    directory = tmp_path / "db"
    directory.mkdir()
    db = directory / "x.duckdb"
    seen = window_ids(sim.world)
    with started(sim, tmp_path, prefix=drop, database={"path": str(db)}, **FAST) as run:
        # The WAL holds every write since start-up; a checkpoint in a read-only directory
        # cannot remove it.
        assert db.with_name("x.duckdb.wal").exists()
        directory.chmod(0o555)
        advance(sim, 20)  # 200 new runs per source: retiring and a checkpoint are due
        seen |= window_ids(sim.world)
        wait_for(lambda: failing(run, "Permission denied"), within=60)
        failed_polls(run, at_least=20)
        during = scrape(run.url)
        directory.chmod(0o755)
        fixed = time.monotonic()
        wait_for(lambda: writable(run) and status_of(f"{run.url}/readyz") == 200, within=60)
        print(f"\nread-only directory: recovered {time.monotonic() - fixed:.1f}s after chmod")
        final = settled(run)
        lines = run.log_lines("Permission denied")
    assert total(during, "synthbrew_exporter_poll_errors_total", reason="store") >= 20
    # five different lines (the commit, the outcome, the checkpoint, reopening twice), each once
    assert 1 <= len(lines) <= 6, "the cause is logged, not once per failed poll"
    assert total(final, "synthbrew_exporter_store_reopened_total") >= 1
    assert run.log_lines("reopened after"), "the log says the database was reopened"
    assert_intact(db, seen, final)


def test_out_of_memory_in_writes_and_refreshes_heals_when_the_limit_is_raised(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """``database.memory_limit`` lowered and raised again at run time (SIGHUP): the store's
    writes and the store-backed metric collectors fail while the others are served."""
    sim = start_sim(make_scenario(sources(20)))
    db = tmp_path / "x.duckdb"
    seen = window_ids(sim.world)
    with started(sim, tmp_path, database={"path": str(db)}, **FAST) as run:
        # DuckDB lowers its limit only as far as it can evict at that moment and refuses
        # below what it must keep (the live index, the work tables): step down, as an operator
        # would, until it refuses.
        lowest = MEMORY_LIMIT
        for limit in ("24MB", "16MB", "12MB", "10MB", "9MB", "8MB", "7MB", "6MB", "5MB"):
            run.reload(memory_limit=limit)
            applied = f"database.memory_limit: {lowest} -> {limit}"
            try:
                wait_for(lambda line=applied: bool(run.log_lines(line)), 2)
            except AssertionError:
                break
            lowest = limit
        assert lowest != MEMORY_LIMIT, run.log.read_text()
        advance(sim, 5)
        seen |= window_ids(sim.world)
        wait_for(lambda: failing(run, "Out of Memory"), within=60)
        success = "synthbrew_exporter_scrape_collector_success"
        wait_for(lambda: 0 in scrape(run.url)[success].values(), within=60)
        failed_polls(run, at_least=20)
        during = scrape(run.url)
        run.reload(memory_limit=MEMORY_LIMIT)
        raised = time.monotonic()
        restored = f"database.memory_limit: {lowest} -> {MEMORY_LIMIT}"
        wait_for(lambda: bool(run.log_lines(restored)), 10)
        wait_for(lambda: writable(run) and status_of(f"{run.url}/readyz") == 200, within=60)
        wait_for(lambda: min(scrape(run.url)[success].values()) == 1, within=30)
        print(f"\nout of memory: recovered {time.monotonic() - raised:.1f}s after SIGHUP")
        final = settled(run)
        lines = run.log_lines("Out of Memory")
    assert total(during, "synthbrew_exporter_poll_errors_total", reason="store") >= 20
    down = {dict(k)["collector"] for k, v in during[success].items() if v == 0}
    for collector, family in FAMILIES.items():
        # one rendering: what failed is left out of it, everything else is in it
        assert (family in during) == (collector not in down), (collector, down)
    for served in ("source_info", "store_writes"):
        assert total(during, success, collector=served) == 1, "they do not read the database"
    assert "synthbrew_exporter_polls_total" in during, "the exporter's own metrics are served"
    assert "process_resident_memory_bytes" in during
    assert total(final, "synthbrew_exporter_internal_errors_total", task="collector") >= 1
    assert 1 <= len(lines) <= 12, "each cause is logged once a minute, not once per poll"
    assert_intact(db, seen, final)


@contextmanager
def simulator_process(world: World, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``synthbrew-exporter simulate`` for ``world``'s scenario, its clock stopped at
    ``world``'s from the first request on (a clock set after start-up would let a poll in first
    see real time)."""
    path = Path(f"/tmp/synthbrew-scenario-{port}.yaml")
    data = world.scenario.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data))
    frozen = world.clock.now().strftime("%Y-%m-%dT%H:%M:%S%z")
    listen = ["--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [EXE, "simulate", *listen, "--scenario", str(path), "--frozen-at", frozen],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/_sim/clock"
    try:
        wait_for(lambda: proc.poll() is not None or status_of(url) == 200, within=60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        path.unlink(missing_ok=True)


def test_the_upstream_killed_mid_poll_and_started_again(tmp_path: Path) -> None:
    clock = SimClock()
    clock.set(EPOCH.replace(hour=14))
    # answers take 300 ms, so with a poll a second per source some are always in flight
    slow = {"faults": {"latency_ms": 300}}
    world = World(make_scenario([{**s, **slow} for s in sources(20)]), clock)
    port = free_port()
    sim = Sim(world, f"http://127.0.0.1:{port}", SimulatorApp(world))
    db = tmp_path / "x.duckdb"
    seen = window_ids(world)
    with (
        simulator_process(world, port) as upstream,
        started(sim, tmp_path, database={"path": str(db)}, **FAST) as run,
    ):
        upstream.send_signal(signal.SIGKILL)  # one poll a second: some are in flight
        upstream.wait(timeout=30)
        wait_for(
            lambda: max(scrape(run.url)["synthbrew_exporter_source_up"].values()) == 0,
            within=60,
        )
        failed_polls(run, at_least=40, reason="connect")
        during = scrape(run.url)
        lines = run.log_lines("(connect)")
        advance(sim, 5)
        seen |= window_ids(world)
        with simulator_process(world, port):
            back = time.monotonic()
            final = settled(run)
            print(f"\nupstream restarted: all sources up {time.monotonic() - back:.1f}s later")
            ready = status_of(f"{run.url}/readyz")
    assert total(during, "synthbrew_exporter_poll_errors_total", reason="connect") >= 40
    assert 1 <= len(lines) <= 2, "one line for the whole fleet, not one per poll"
    assert "RemoteProtocolError" in lines[0] or "ReadError" in lines[0], "killed mid-answer"
    assert total(during, "synthbrew_exporter_store_writable") == 1, "the store is not at fault"
    assert ready == 200
    assert_intact(db, seen, final)
