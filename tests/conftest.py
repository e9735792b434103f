"""Shared fixtures: a simulator on real loopback HTTP, and configs that point at it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config, parse_config
from exporter.httpserver import ThreadedServer
from exporter.simulator import Scenario, SimClock, SimulatorApp, World

API_KEY = "sb_api_test_0123456789abcdef"
EPOCH = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Sim:
    """A running simulator: its world (ground truth, clock) and its URL."""

    def __init__(self, world: World, url: str, app: SimulatorApp) -> None:
        self.world = world
        self.url = url
        self.app = app
        self.base_url = f"{url}/api"

    @property
    def clock(self) -> SimClock:
        return self.world.clock

    def ids(self, project: str, source: str) -> tuple[Any, Any]:
        for p in self.world.scenario.projects:
            for s in p.sources:
                if p.name == project and s.name == source:
                    return p.id, s.id
        raise KeyError((project, source))

    def state(self, project: str, source: str) -> Any:
        return self.world.source(*self.ids(project, source))

    def config(self, **api: Any) -> Config:
        return parse_config(config_data(self, **api), environ={})


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


@pytest.fixture
def start_sim() -> Iterator[Callable[..., Sim]]:
    """Start a simulator for a scenario; the clock is frozen at ``now`` (default: 2 h in)."""
    servers: list[ThreadedServer] = []

    def start(scenario: Scenario, now: datetime | None = None) -> Sim:
        clock = SimClock()
        clock.set(now or EPOCH.replace(hour=14))
        world = World(scenario, clock)
        app = SimulatorApp(world)
        server = ThreadedServer(app.app).__enter__()
        servers.append(server)
        return Sim(world, server.url, app)

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def sim(start_sim: Callable[..., Sim]) -> Sim:
    return start_sim(make_scenario([{"name": "orders"}, {"name": "customers"}]))


async def eventually(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Wait until ``predicate()`` holds; fail the test if it does not ``within`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount tiny tmpfs file systems (``mount -o`` options: read-only, nearly full); skip with the
    reason where mounting is denied (it needs root, which CI has)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
