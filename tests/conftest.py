"""Pytest fixtures only: a simulator on real loopback HTTP, tiny file systems.

What the fixtures build with lives in ``tests/factories.py`` (data) and ``tests/runners.py``
(servers and processes); test modules import from those, never from here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from exporter.httpserver import ThreadedServer
from exporter.simulator import Scenario, SimClock, SimulatorApp, World
from tests.factories import EPOCH, make_scenario
from tests.runners import Sim


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
