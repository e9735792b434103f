"""Helpers for tests that run the real console script as a subprocess."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import Sim, config_data
from tests.test_cli import EXE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def exporter(sim: Sim, tmp_path: Path, **sections: Any) -> Iterator[str]:
    """`synthbrew-exporter run` as a subprocess on a free port; stopped by SIGTERM, exit 0."""
    data = config_data(sim, timeout_seconds=2, retry={"attempts": 1})
    data.update(sections)
    port = free_port()
    data["database"] = {"path": str(tmp_path / "x.duckdb")}
    data["collector"] = {"interval_seconds": 2}
    data["server"] = {"listen": f"127.0.0.1:{port}"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen(
        [EXE, "run", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: status_of(f"{url}/healthz") == 200)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err


def status_of(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


def wait_for(predicate: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
