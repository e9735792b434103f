"""The real console script, run as a subprocess: exit codes and what the operator sees."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import EXE, GOOD


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert "synthbrew-exporter" in result.stdout


def test_check_config_prints_redacted_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    result = cli("check-config", "--config", str(path), env={"SYNTHBREW_API_KEY": "sb_api_HIDDEN"})
    assert result.returncode == 0, result.stderr
    assert "HIDDEN" not in result.stdout + result.stderr
    assert "page_limit: 200" in result.stdout
    assert "api_key: '**********'" in result.stdout


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD.replace("name: orders", "name: orders\n        bogus: 1"), "bogus: unknown key"),
        (GOOD + "collector:\n  page_limit: 500\n", "collector.page_limit"),
        (GOOD.replace("5f0c3cc0", "zzzz"), "projects[0].sources[0].id"),
        ("api: {", "invalid YAML"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = cli("check-config", "--config", str(path), env={"SYNTHBREW_API_KEY": "sb_api_x"})
    assert result.returncode == 2
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")


def test_missing_env_var_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    env = {k: v for k, v in os.environ.items() if k != "SYNTHBREW_API_KEY"}
    result = subprocess.run(
        [EXE, "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "api.api_key: environment variable SYNTHBREW_API_KEY is not set" in result.stderr


def test_simulate_serves_over_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [EXE, "simulate", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(2)]
        assert f"http://127.0.0.1:{port}/api" in banner[0]
        _, _, project, _, _, source = banner[1].split()
        url = (
            f"http://127.0.0.1:{port}/api/public/v1/projects/{project}"
            f"/sources/{source}/generation-events"
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(url, headers={"x-api-key": "sb_api_demo"}, params={"limit": 5})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200
        assert len(r.json()) == 5
        assert httpx.get(url).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
