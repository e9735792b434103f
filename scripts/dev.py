#!/usr/bin/env python3
"""Set up everything from a fresh clone with only python3, then run the demo or the test suite.

Why a script and not a Makefile: the only thing a fresh machine is promised is python3. This
script creates a private venv holding a pinned `uv`, lets uv build `.venv` from `uv.lock` (so
every machine gets the same versions), installs the Debian packages the tests run for real
(prometheus, chromium, chromium-driver) when they are missing and we are allowed to, and then
hands over to the real command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
UV_VERSION = "0.13.9"
USAGE = "usage: python3 scripts/dev.py demo [run options...] | test [pytest options...]"


def sh(*cmd: str | Path, check: bool = True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check).returncode


def uv() -> Path:
    exe = TOOLS / "bin" / "uv"
    if not exe.exists():
        venv.create(TOOLS, with_pip=True, clear=True)
        sh(TOOLS / "bin" / "python", "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}")
    return exe


def sync() -> None:
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    os.environ["UV_PROJECT_ENVIRONMENT"] = str(ROOT / ".venv")
    # Compiled up front: where PYTHONDONTWRITEBYTECODE is set, every start would otherwise
    # compile each imported module again (measured: 0.9 s -> 0.4 s for `--version`).
    sh(uv(), "sync", "--locked", "--compile-bytecode", "--python", sys.executable)


# Debian packages the tests run for real: promtool and the Prometheus server, and a headless
# browser with its driver for the pages.
DEBIAN_TOOLS = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}


def ensure_debian_tools() -> None:
    """Install what is missing of :data:`DEBIAN_TOOLS`; the tests that need it skip otherwise."""
    packages = sorted({pkg for exe, pkg in DEBIAN_TOOLS.items() if not shutil.which(exe)})
    if not packages:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"! {', '.join(packages)} missing and cannot install here: those tests will skip")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL).returncode:
            print(f"! {' '.join(cmd[:2])} failed: the tests that need {', '.join(packages)} skip")
            return
    # The package starts a system Prometheus on :9090; the tests start their own.
    subprocess.run(["service", "prometheus", "stop"], check=False, capture_output=True)


def venv_bin(name: str) -> str:
    return str(ROOT / ".venv" / "bin" / name)


def test(args: list[str]) -> int:
    sync()
    ensure_debian_tools()
    failed = []
    checks = {
        "ruff check": [venv_bin("ruff"), "check", "."],
        "ruff format": [venv_bin("ruff"), "format", "--check", "."],
        "mypy": [venv_bin("mypy"), "--strict", "exporter"],
        "pytest": [venv_bin("pytest"), *args],
    }
    for name, cmd in checks.items():
        if sh(*cmd, check=False) != 0:
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


def demo(args: list[str]) -> int:
    sync()
    cmd = [venv_bin("synthbrew-exporter"), "run", "--demo", *args]
    print("+", " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test"}:
        print(USAGE, file=sys.stderr)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    return demo(args) if command == "demo" else test(args)


if __name__ == "__main__":
    sys.exit(main())
