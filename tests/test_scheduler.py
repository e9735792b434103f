from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from statistics import pstdev
from uuid import uuid4

import pytest

from exporter.config import ProjectConfig, SourceConfig
from exporter.scheduler import PollScheduler, start_offset
from exporter.supervision import Faults
from exporter.targets import Target, targets
from tests.factories import make_scenario, stored, truth
from tests.runners import Sim, eventually, running


def fake_target() -> Target:
    source = SourceConfig(id=uuid4())
    project = ProjectConfig(id=uuid4(), sources=[source])
    return Target(project=project, source=source, api_key=None, interval_seconds=60)  # type: ignore[arg-type]


def test_start_offsets_are_stable_and_spread() -> None:
    many = [fake_target() for _ in range(1000)]
    offsets = [start_offset(t, 60) for t in many]
    assert offsets == [start_offset(t, 60) for t in many], "same source, same offset"
    assert all(0 <= o < 60 for o in offsets)
    buckets = [sum(1 for o in offsets if 6 * i <= o < 6 * (i + 1)) for i in range(10)]
    assert min(buckets) > 60, f"roughly uniform across the interval: {buckets}"
    assert pstdev(buckets) < 20


async def test_scheduler_polls_every_source(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario([{"name": f"s{i}"} for i in range(5)]))
    async with running(sim, tmp_path / "x.duckdb", interval_seconds=1) as (c, store, _):
        scheduler = PollScheduler(c, targets(c.config))
        scheduler.start()
        await eventually(lambda: scheduler.all_polled)
        await scheduler.stop(5)
        assert scheduler.all_polled
        assert stored(store) == {k: v for s in range(5) for k, v in truth(sim, f"s{s}").items()}


async def test_stop_waits_for_polls_in_flight(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "slow", "faults": {"latency_ms": 800}}]))
    async with running(sim, tmp_path / "x.duckdb", interval_seconds=1) as (c, store, _):
        scheduler = PollScheduler(c, targets(c.config))
        scheduler.start()
        await eventually(lambda: sim.state("shop", "slow").requests > 0)
        abandoned = await scheduler.stop(5)
        assert abandoned == 0
        assert stored(store) == truth(sim, "slow"), "the poll in flight finished and committed"


async def test_overflowing_source_is_rescheduled_sooner(
    start_sim: Callable[..., Sim], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.scheduler")
    sim = start_sim(make_scenario([{"name": "busy", "runs_per_hour": 3600}]))
    async with running(sim, tmp_path / "x.duckdb", interval_seconds=4, min_interval_seconds=1) as (
        c,
        _,
        _,
    ):
        [t] = targets(c.config)
        await c.poll(t)
        sim.clock.advance(600)
        scheduler = PollScheduler(c, [t])
        scheduler.start()
        await eventually(lambda: scheduler.all_polled)
        await asyncio.sleep(0.1)
        await scheduler.stop(5)
        assert c.state(t).plan.interval_seconds == 2
    # The job itself was moved to the new interval, not only the plan.
    assert f"poll {t.name}: interval 4.0s -> 2.0s" in caplog.text


async def test_housekeeping_jobs_run_beside_the_polls(sim: Sim, tmp_path: Path) -> None:
    runs: list[float] = []

    async def job() -> None:
        runs.append(asyncio.get_running_loop().time())

    async with running(sim, tmp_path / "x.duckdb") as (c, _, _):
        scheduler = PollScheduler(c, [])
        scheduler.every("export", 0.2, job)
        scheduler.start()
        await eventually(lambda: len(runs) >= 2)
        await scheduler.stop(1)
    assert runs[1] > runs[0]


async def test_a_failing_housekeeping_job_is_counted_and_runs_again(
    sim: Sim, tmp_path: Path
) -> None:
    turns: list[int] = []

    async def job() -> None:
        turns.append(len(turns))
        raise OSError(28, "No space left on device")

    async with running(sim, tmp_path / "x.duckdb") as (c, _, _):
        faults = Faults()
        scheduler = PollScheduler(c, [], faults)
        scheduler.every("export", 0.1, job)
        scheduler.start()
        await eventually(lambda: len(turns) >= 3)
        await scheduler.stop(1)
    assert faults.counts["export"] >= 3


async def test_a_poll_that_raises_unexpectedly_keeps_its_schedule(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(sim, tmp_path / "x.duckdb") as (c, _, _):
        t = targets(sim.config())[0]
        calls: list[object] = []

        async def broken(target: Target) -> object:
            calls.append(target)
            raise KeyError("a bug")

        monkeypatch.setattr(c, "poll", broken)
        faults = Faults()
        scheduler = PollScheduler(c, [t], faults)
        scheduler.start()
        await eventually(lambda: len(calls) >= 1)
        await scheduler.stop(1)
    assert faults.counts["poll"] == len(calls) >= 1
    assert scheduler.all_polled
