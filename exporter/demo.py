"""``run --demo``: the simulator and the exporter in one process, no config file needed.

A new demo database is first given 30 days of the simulator's runs, as if the exporter had been
polling for a month, so the usage pages have history to show. The simulator's runs are fixed in
time (its epoch is a constant), so a demo restarted later stores the same runs under the same
ids. When Debian's ``prometheus`` is installed, the demo also starts it with the project's
configuration and rules, scraping the demo exporter.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from exporter import service
from exporter.config import Config, parse_config
from exporter.httpserver import address, bind, make_server
from exporter.models import GenerationEvent
from exporter.simulator import Scenario, SimulatorApp, World, demo_scenario
from exporter.store import Store
from exporter.store.ingest import PageIn

DEMO_KEY = "sb_api_demo_key"
DEMO_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
HISTORY_DAYS = 30
PROMETHEUS_DIR = Path(__file__).resolve().parent.parent / "prometheus"  # in a checkout only


# What to try against a running demo, from a second terminal; the README's tour runs the same.
TOUR = (
    "check-config --config {config}",
    "report --config {config}",
    "report usage_daily --config {config} --param since=today-6",
    'sql --config {config} "SELECT project, status, count(*) AS runs FROM runs GROUP BY ALL'
    ' ORDER BY ALL"',
    "regenerate --config {config} --project shop --source orders --seed demo-1 --wait",
    "export --config {config}",
)


def config_path(db_path: Path) -> Path:
    """Where the demo writes its effective config: beside its database."""
    return db_path.with_suffix(".yaml")


def demo_config_data(
    base_url: str, scenario: Scenario, db_path: Path, listen: str
) -> dict[str, Any]:
    """The demo's config as a config file holds it (absolute paths: the commands that read it
    may run anywhere)."""
    db_path = db_path.resolve()
    return {
        "api": {"base_url": base_url, "api_key": DEMO_KEY},
        "collector": {"interval_seconds": 15},
        "database": {"path": str(db_path)},
        "server": {"listen": listen},
        "export": {"path": str(db_path.with_name(f"{db_path.stem}-export"))},
        "billing": {
            "price_per_1000_rows": 0.02,
            "included_rows": {"shop": 2_500_000_000, "analytics": 4_000_000_000},
        },
        "projects": [
            {
                "id": str(p.id),
                "name": p.name,
                "sources": [{"id": str(s.id), "name": s.name} for s in p.sources],
            }
            for p in scenario.projects
        ],
    }


def write_config(data: dict[str, Any], path: Path) -> None:
    """The file the tour's commands read; only its owner may read it (it holds the demo's
    key, as any config file holds one)."""
    path.touch(mode=0o600)
    path.write_text(
        "# Written by `run --demo`: the running demo's effective config.\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )


def seed_history(config: Config, world: World, days: int, now: datetime) -> int:
    """Store the simulator's runs of the last ``days`` in an empty database, the way polls
    would have (the same pages into the same store); a database with runs is left alone."""
    store = Store(config.database.path, memory_limit=config.database.memory_limit)
    try:
        if sum(store.event_counts().values()):
            return 0
        since = now - timedelta(days=days)
        stored = 0
        for key, state in world.sources.items():
            per_day = state.source.runs_per_hour * 24
            specs = [s for s in world.runs(state, now, int(per_day * days)) if s.queued_at >= since]
            events = [GenerationEvent.model_validate(world.event(state, s, now)) for s in specs]
            for start in range(0, len(events), 5_000):
                page = PageIn(key[0], key[1], events[start : start + 5_000], full_window=False)
                store.ingest([page], now=now, stale_after=timedelta())
            stored += len(events)
        return stored
    finally:
        store.close()


@contextmanager
def prometheus(target: str, listen: str, data_dir: Path) -> Iterator[str | None]:
    """Debian's Prometheus with the project's rules, scraping ``target`` (HOST:PORT): the URL of
    its alerts page; None when the binary or the rules (a source checkout) are missing, or it
    did not start."""
    exe = shutil.which("prometheus")
    if exe is None or not PROMETHEUS_DIR.is_dir():
        yield None
        return
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["rule_files"] = [str(PROMETHEUS_DIR / rule) for rule in config["rule_files"]]
    config["scrape_configs"][0]["scrape_interval"] = "15s"
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    path = data_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with (data_dir / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={path}",
                f"--storage.tsdb.path={data_dir / 'data'}",
                f"--web.listen-address={listen}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            # A port in use or a bad rule ends it at once: say so rather than print its URL.
            try:
                proc.wait(timeout=1)
                yield None
            except subprocess.TimeoutExpired:
                yield alerts_page(f"http://{listen}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def alerts_page(base: str) -> str:
    """Prometheus's alerts page: ``/alerts`` in the upstream build; Debian's package has only
    the classic UI, at ``/classic/alerts`` (``/alerts`` answers 404 there)."""
    for path in ("/alerts", "/classic/alerts"):
        for _ in range(20):  # its web server comes up a moment after the process
            try:
                status = httpx.get(f"{base}{path}", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.25)
                continue
            if status == 200:
                return f"{base}{path}"
            break
    return f"{base}/"


async def run_demo(
    *,
    listen: str,
    simulator_listen: str,
    prometheus_listen: str,
    db_path: Path,
    command: str,
    announce: Callable[[str], object],
) -> None:
    """``command`` is how the user calls the CLI, for the commands printed to try."""
    scenario = demo_scenario()
    scenario.epoch = DEMO_EPOCH
    sim = SimulatorApp(World(scenario))
    sock = bind(simulator_listen)
    sim_server = make_server(sim.app)
    sim_task = asyncio.create_task(sim_server.serve(sockets=[sock]))
    data = demo_config_data(f"http://{address(sock)}/api", scenario, db_path, listen)
    config = parse_config(data, environ={})
    seeded = await asyncio.to_thread(
        seed_history, config, sim.world, HISTORY_DAYS, sim.world.clock.now()
    )
    if seeded:
        announce(f"history:    {seeded:,} simulated runs of the last {HISTORY_DAYS} days stored")
    with ExitStack() as cleanup:

        def serving(url: str) -> None:
            """Once the exporter answers: Prometheus can scrape it, and the rest is printed."""
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="synthbrew-demo-"))
            target = url.split("://", 1)[1]
            prom = cleanup.enter_context(prometheus(target, prometheus_listen, Path(tmp)))
            announce(f"simulator:  http://{address(sock)}/api  ({len(sim.world.sources)} sources)")
            announce(f"database:   {db_path}")
            if prom:
                announce(f"prometheus: {prom}  (the project's rules, scraping {target})")
            elif shutil.which("prometheus"):
                announce(f"prometheus: did not start on {prometheus_listen}: see {tmp}")
            else:
                announce("prometheus: not installed (Debian: apt-get install prometheus)")
            announce(
                "grafana:    mount grafana/provisioning at /etc/grafana/provisioning and"
                " grafana/dashboards at /var/lib/grafana/dashboards/synthbrew"
                " (or: docker compose up)"
            )
            written = config_path(db_path)
            write_config({**data, "server": {"listen": target}}, written)
            announce(f"config:     {written}  (the demo's own; try, from another terminal:)")
            for line in TOUR:
                announce(f"  {command} {line.format(config=written)}")

        try:
            await service.run(config, announce=announce, serving=serving)
        finally:
            sim_server.should_exit = True
            await sim_task
            sock.close()
