"""Shared pieces of the benchmark and soak scripts: a simulator on loopback, a config for it,
the exporter as a subprocess, and scraping its metrics."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.httpserver import ThreadedServer
from exporter.simulator import Scenario, SimulatorApp, World

EXE = str(Path(sys.executable).with_name("synthbrew-exporter"))
Samples = dict[str, list[tuple[dict[str, str], float]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scenario(sources: int, **per_source: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "seed": 1,
            "history_hours": 24,
            "projects": [
                {
                    "name": f"p{p}",
                    "sources": [{"name": f"s{i}", **per_source} for i in range(p, sources, 10)],
                }
                for p in range(min(10, sources))
            ],
        }
    )


@contextmanager
def simulator(world: World) -> Iterator[str]:
    with ThreadedServer(SimulatorApp(world).app) as server:
        yield f"{server.url}/api"


def write_config(world: World, base_url: str, workdir: Path, **sections: Any) -> tuple[Path, str]:
    port = free_port()
    data: dict[str, Any] = {
        "api": {"base_url": base_url, "api_key": "sb_api_bench"},
        "database": {"path": str(workdir / "bench.duckdb")},
        "server": {"listen": f"127.0.0.1:{port}"},
        "projects": [
            {
                "id": str(p.id),
                "name": p.name,
                "sources": [{"id": str(s.id), "name": s.name} for s in p.sources],
            }
            for p in world.scenario.projects
        ],
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, f"http://127.0.0.1:{port}"


@contextmanager
def exporter(config: Path, url: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [EXE, "--log-level", "error", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(f"{url}/healthz", proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def wait_until_serving(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until ``url`` answers; a process that exits or a minute without an answer is an error."""
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"nothing serves {url}") from None
            time.sleep(0.1)


def scrape(url: str) -> Samples:
    out: Samples = defaultdict(list)
    text = httpx.get(f"{url}/metrics", timeout=60).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((sample.labels, sample.value))
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for labels, v in samples.get(name, [])
        if all(labels.get(k) == m for k, m in match.items())
    )


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, v in samples.get(name, []):
        out[labels[label]] += v
    return dict(out)


class Simulator:
    """The simulator as its own process, so it does not share a core with what is measured."""

    def __init__(self, world: World, workdir: Path) -> None:
        data = world.scenario.model_dump(mode="json")
        data["epoch"] = world.epoch.isoformat()
        path = workdir / "scenario.yaml"
        path.write_text(yaml.safe_dump(data))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [EXE, "simulate", "--listen", f"127.0.0.1:{self.port}", "--scenario", str(path)],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until_serving(f"{self.url}/_sim/clock", self.proc)

    def freeze(self, when: datetime) -> None:
        httpx.post(f"{self.url}/_sim/clock", json={"set": when.isoformat()})

    def advance(self, seconds: float) -> None:
        httpx.post(f"{self.url}/_sim/clock", json={"advance": seconds})

    def warm_up(self, world: World) -> None:
        """Fill the simulator's run cache, so the cycles measure the exporter, not it."""
        with httpx.Client(headers={"x-api-key": "sb_api_bench"}) as http:
            for project, source in world.sources:
                http.get(
                    f"{self.url}/api/public/v1/projects/{project}/sources/{source}"
                    "/generation-events",
                    params={"limit": 200},
                )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
