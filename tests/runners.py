"""Runners of real servers and processes for the tests, and the probes that wait for them
and read them. Builders of data are in ``tests/factories.py``; fixtures in ``tests/conftest.py``.

In-process, on real loopback HTTP: :class:`Sim` (a simulator that is serving: its world, clock
and URL), :func:`running` (a :class:`~exporter.poller.Poller` polling a simulator into a real
DuckDB file), :func:`eventually` (await a condition).

The console script as a subprocess: :func:`exporter` and :func:`started` (`run` until stopped;
:class:`Running`), :func:`collect` (one pass), :func:`write_config` and :func:`free_port` for
them; probes: :func:`wait_for`, :func:`listening`, :func:`status_of`, :func:`scrape` (with
:func:`labels` for its keys).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.client import SynthbrewClient
from exporter.config import Config, parse_config
from exporter.poller import Poller
from exporter.selfmetrics import ExporterStats
from exporter.simulator import SimClock, SimulatorApp, World
from exporter.store import IngestQueue, Store
from exporter.targets import targets
from tests.factories import EXE, config_data

# --- in-process: a simulator, a poller against it --------------------------------------------


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


@asynccontextmanager
async def running(
    sim: Sim, db: Path, api: dict[str, Any] | None = None, **collector: Any
) -> AsyncIterator[tuple[Poller, Store, CollectorRegistry]]:
    """A Poller of ``sim`` storing into the DuckDB file ``db``, warm-started on its targets;
    ``api`` and ``collector`` are config sections. Yields it, its store and its stats' registry."""
    data = config_data(sim, **(api or {}))
    data["collector"] = collector
    data["database"] = {"path": str(db)}
    config = parse_config(data, environ={})
    store = Store(config.database.path)
    registry = CollectorRegistry()
    queue = IngestQueue(store, timedelta(seconds=config.collector.stale_after_seconds))
    try:
        async with SynthbrewClient(config.api) as client:
            c = Poller(config, client, store, queue, ExporterStats(registry))
            c.warm_start(targets(config))
            yield c, store, registry
    finally:
        await queue.aclose()
        store.close()


async def eventually(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Wait until ``predicate()`` holds; fail the test if it does not ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- the console script as a subprocess ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(sim: Sim, tmp_path: Path, **sections: Any) -> tuple[Path, str]:
    """A config for ``sim`` on a free port; ``sections`` are merged over the defaults.
    Returns the file and the exporter's URL."""
    data = config_data(sim, timeout_seconds=2, retry={"attempts": 1})
    port = free_port()
    data["database"] = {"path": str(tmp_path / "x.duckdb")}
    data["collector"] = {"interval_seconds": 2}
    data["server"] = {"listen": f"127.0.0.1:{port}"}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    scheme = "https" if "tls_server_config" in data["server"] else "http"
    return path, f"{scheme}://127.0.0.1:{port}"


@contextmanager
def exporter(
    sim: Sim, tmp_path: Path, log: list[str] | None = None, **sections: Any
) -> Iterator[str]:
    """`synthbrew-exporter run` as a subprocess on a free port; stopped by SIGTERM, exit 0.
    Its stderr is appended to ``log`` when given."""
    path, url = write_config(sim, tmp_path, **sections)
    # stderr goes to a file: an unread pipe would fill up and block the exporter's logging.
    with (tmp_path / "exporter.log").open("w+") as stderr:
        proc = subprocess.Popen(
            [EXE, "run", "--config", str(path)], stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            wait_for(lambda: proc.poll() is not None or listening(url))
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            stderr.seek(0)
            err = stderr.read()
            if log is not None:
                log.append(err)
            assert proc.returncode == 0, err


def collect(config: Path) -> subprocess.CompletedProcess[str]:
    """One `synthbrew-exporter collect` pass, output captured."""
    return subprocess.run(
        [EXE, "collect", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def listening(url: str) -> bool:
    """Something accepts TCP connections at the URL's host and port (TLS or not)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def status_of(url: str, **kwargs: Any) -> int:
    try:
        return httpx.get(url, timeout=5, **kwargs).status_code
    except httpx.TransportError:
        return 0


def scrape(url: str, **kwargs: Any) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Every sample of ``/metrics``: name -> labels -> value."""
    text = httpx.get(f"{url}/metrics", timeout=30, **kwargs).text
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][frozenset(sample.labels.items())] = sample.value
    return out


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def wait_for(predicate: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@dataclass
class Running:
    """A `synthbrew-exporter run` subprocess, its URL, config and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    config: Path
    log: Path

    def log_lines(self, containing: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if containing in line]

    def reload(self, **database: Any) -> None:
        """Change ``database`` settings in the config file and send SIGHUP."""
        data = yaml.safe_load(self.config.read_text())
        data["database"] = {**data["database"], **database}
        self.config.write_text(yaml.safe_dump(data))
        self.proc.send_signal(signal.SIGHUP)


@contextmanager
def started(
    sim: Sim, tmp_path: Path, prefix: Sequence[str] = (), **sections: Any
) -> Iterator[Running]:
    """`synthbrew-exporter run` (behind ``prefix``, e.g. setpriv) until ready; stopped by
    SIGTERM at the end, which must exit 0."""
    path, url = write_config(sim, tmp_path, **sections)
    log = tmp_path / "exporter.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*prefix, EXE, "run", "--config", str(path)], stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            wait_for(lambda: proc.poll() is not None or status_of(f"{url}/readyz") == 200, 120)
            assert proc.poll() is None, log.read_text()
            yield Running(proc, url, path, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()
