"""Helpers for tests that run the real console script as a subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Sim, config_data
from tests.test_cli import EXE


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
