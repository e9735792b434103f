"""Deployment files: the Dockerfile's structure and install step, compose, Kubernetes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import load_config, parse_config
from exporter.simulator import demo_scenario

ROOT = Path(__file__).parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure() -> None:
    steps = instructions()
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) == 2, "multi-stage"
    assert stages[-1] == "python:3.11-slim"
    final = steps[[w for w, _ in steps].index("FROM", 1) :]
    final_words = dict(final)
    assert final_words["USER"] not in {"root", "0"}
    assert final_words["VOLUME"] == '["/data"]'
    assert final_words["EXPOSE"] == "9794"
    assert "/healthz" in final_words["HEALTHCHECK"]
    assert final_words["ENTRYPOINT"] == '["synthbrew-exporter"]'
    assert final_words["CMD"] == '["run", "--config", "/etc/synthbrew-exporter/config.yaml"]'
    build = steps[: [w for w, _ in steps].index("FROM", 1)]
    assert ("RUN", "sh scripts/install.sh /opt/venv") in build
    assert any(w == "COPY" and "uv.lock" in a for w, a in build), "installs from the lock file"
    for word, args in steps:
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"


def uv() -> str | None:
    local = ROOT / ".tools" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


@pytest.mark.e2e
@pytest.mark.skipif(uv() is None, reason="uv not installed (scripts/dev.py installs it)")
def test_the_dockerfile_install_step_works_in_a_clean_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["sh", "scripts/install.sh", str(venv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "UV": str(uv()), "VIRTUAL_ENV": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "synthbrew-exporter, version 0.1.0" in done.stdout
    exe = venv / "bin" / "synthbrew-exporter"
    reports = subprocess.run(
        [str(exe), "report", "--database", str(tmp_path / "x.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "usage_daily" in reports.stdout, "the wheel carries the named reports"
    frozen = subprocess.run(
        [str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True
    ).stdout
    assert "pytest" not in frozen, "no test or dev dependencies in the image"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def test_compose_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"simulator", "exporter", "prometheus", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (ROOT / host).exists(), f"{name} mounts {host}, which does not exist"
    assert services["exporter"]["ports"] == ["9794:9794"]


def test_compose_exporter_config_matches_the_simulator(tmp_path: Path) -> None:
    config = load_config(
        ROOT / "deploy/compose/config.yaml", environ={"SYNTHBREW_API_KEY": "sb_api_demo_key"}
    )
    demo = demo_scenario()
    assert [(p.name, p.id) for p in config.projects] == [(p.name, p.id) for p in demo.projects]
    assert config.server.listen == "0.0.0.0:9794", "reachable from the other containers"
    scrape = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["exporter:9794"]


def kubernetes() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests() -> None:
    docs = kubernetes()
    assert set(docs) == {"ConfigMap", "StatefulSet", "Service", "ServiceMonitor"}
    sts = docs["StatefulSet"]["spec"]
    container = sts["template"]["spec"]["containers"][0]
    args = container["args"]
    shard = args[args.index("--shard") + 1]
    assert shard == f"$(SHARD_INDEX)/{sts['replicas']}", "one shard per replica"
    env = {e["name"]: e for e in container["env"]}
    assert "pod-index" in env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sts["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    labels = sts["template"]["metadata"]["labels"]
    service = docs["Service"]
    assert service["spec"]["selector"] == labels
    monitor = docs["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_kubernetes_config_is_valid() -> None:
    text = kubernetes()["ConfigMap"]["data"]["config.yaml"]
    config = parse_config(yaml.safe_load(text), environ={"SYNTHBREW_API_KEY": "sb_api_k8s"})
    assert str(config.database.path).startswith("/data/")
    assert config.server.listen.startswith("0.0.0.0:")
