"""``run --demo``: the simulator and the exporter in one process, no config file needed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from exporter import service
from exporter.config import Config, parse_config
from exporter.httpserver import address, bind, make_server
from exporter.simulator import Scenario, SimulatorApp, World, demo_scenario

DEMO_KEY = "sb_api_demo_key"


def demo_config(base_url: str, scenario: Scenario, db_path: Path, listen: str) -> Config:
    return parse_config(
        {
            "api": {"base_url": base_url, "api_key": DEMO_KEY},
            "collector": {"interval_seconds": 15},
            "database": {"path": str(db_path)},
            "server": {"listen": listen},
            "projects": [
                {
                    "id": str(p.id),
                    "name": p.name,
                    "sources": [{"id": str(s.id), "name": s.name} for s in p.sources],
                }
                for p in scenario.projects
            ],
        },
        environ={},
    )


async def run_demo(
    *, listen: str, simulator_listen: str, db_path: Path, announce: Callable[[str], object]
) -> None:
    scenario = demo_scenario()
    sim = SimulatorApp(World(scenario))
    sock = bind(simulator_listen)
    sim_server = make_server(sim.app)
    sim_task = asyncio.create_task(sim_server.serve(sockets=[sock]))
    config = demo_config(f"http://{address(sock)}/api", scenario, db_path, listen)
    announce(f"simulator:  http://{address(sock)}/api  (serving {len(sim.world.sources)} sources)")
    announce(f"database:   {db_path}")
    announce(
        "prometheus: prometheus --config.file=prometheus/prometheus.yml"
        f"  (scrapes {listen}; rules in prometheus/rules/)"
    )
    announce(
        "grafana:    mount grafana/provisioning at /etc/grafana/provisioning and"
        " grafana/dashboards at /var/lib/grafana/dashboards/synthbrew (or: docker compose up)"
    )
    try:
        await service.run(config, announce=announce)
    finally:
        sim_server.should_exit = True
        await sim_task
        sock.close()
