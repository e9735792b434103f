"""The README's tour, run as written against a running demo, so the README cannot drift from
the product: every command of its tour block exits 0, and the demo prints the same commands."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import EXE
from tests.runners import free_port

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parent.parent / "README.md"
AS_WRITTEN = ".venv/bin/synthbrew-exporter"


def tour_commands() -> list[str]:
    """The command lines between the README's ``<!-- tour -->`` markers."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- tour -->(.*?)<!-- /tour -->", text, re.S)
    assert block, "README.md has no tour block"
    return [line for line in block.group(1).splitlines() if line.startswith(AS_WRITTEN)]


def test_the_readme_tour_has_the_commands_the_issue_asks_for() -> None:
    subcommands = [shlex.split(line)[1] for line in tour_commands()]
    assert subcommands == ["check-config", "report", "report", "sql", "regenerate", "export"]


def test_every_tour_command_works_against_a_running_demo(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            EXE,
            "run",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--simulator-listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            f"127.0.0.1:{free_port()}",
        ],
        cwd=tmp_path,  # the demo's database and config go where it was started, as documented
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        while not printed or not printed[-1].lstrip().startswith(f"{EXE} export"):
            line = proc.stdout.readline()
            assert line, f"the demo ended early: {printed}"
            printed.append(line.rstrip("\n"))
        url = next(line.split()[1] for line in printed if line.startswith("usage:"))
        deadline = time.monotonic() + 120
        while httpx.get(url.replace("/usage", "/readyz"), timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the demo never became ready"
            time.sleep(0.5)
        tour = tour_commands()
        # The demo prints the README's commands, with how it was called in place of .venv/bin.
        suggested = [line.strip() for line in printed if line.lstrip().startswith(EXE)]
        assert suggested == [line.replace(AS_WRITTEN, EXE, 1) for line in tour]
        results = {}
        for line in tour:
            argv = [EXE, *shlex.split(line)[1:]]
            results[line] = subprocess.run(
                argv, cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    for line, result in results.items():
        assert result.returncode == 0, (line, result.stdout[-2000:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, line
    check, listing, daily, sql, regenerate, export = results.values()
    assert "sb_api_demo_key" not in check.stdout, "check-config redacts the key"
    assert "usage_daily" in listing.stdout
    assert daily.stdout.count("\n") > 2, "a week of days"
    assert re.search(r"\bshop\b.*\bsuccess\b", sql.stdout)
    assert "status:     success" in regenerate.stdout
    assert "the running exporter polled the source" in regenerate.stderr
    assert "file(s) written" in export.stdout
    assert list((tmp_path / "synthbrew-demo-export").rglob("*.parquet"))
