"""A real Prometheus (Debian's package) scrapes ``run`` fed by the simulator; every expression
of every dashboard panel and every rule is evaluated through its HTTP API and must return data.

Template variables are substituted as Grafana would for "All" (``.*``); ``offset 1w`` becomes
``offset 5s``, because this Prometheus has seconds of history, not weeks; an alert's comparisons
with a number are dropped, so what is checked is that the series it compares exist.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.factories import make_scenario
from tests.runners import Sim, exporter, free_port, status_of, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus not installed (Debian package prometheus)",
    ),
]
ROOT = Path(__file__).parent.parent
SCALAR_COMPARISON = re.compile(r"\s*(?:>=|<=|==|!=|>|<)\s*[0-9][0-9.e+]*")


@contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))],
        "scrape_configs": [
            {"job_name": "synthbrew-exporter", "static_configs": [{"targets": [target]}]}
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: status_of(f"{url}/-/ready") == 200, within=60)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def query(url: str, expr: str) -> tuple[str, list[Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30).json()
    if answer["status"] != "success":
        return f"error: {answer.get('error')}", []
    return "ok", answer["data"]["result"]


def grafana_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = (
                    target["expr"]
                    .replace("$__rate_interval", "1m")
                    .replace("$project", ".*")
                    .replace("$source", ".*")
                )
                out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", expr))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = rule["expr"].replace("offset 1w", "offset 5s")
                if "alert" in rule:
                    out.append((f"alert {rule['alert']}", SCALAR_COMPARISON.sub("", expr)))
                else:
                    out.append((f"record {rule['record']}", expr))
    return out


SCENARIO = [
    {"name": "orders", "failure_rate": 0.3, "duration_seconds": 900},
    {"name": "billing", "runs_per_hour": 60},
    {"name": "broken", "faults": {"status": 500}},
]


def test_every_panel_and_rule_returns_data(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario(SCENARIO))
    billing = {"price_per_1000_rows": 0.5, "included_rows": {"shop": 1000}}
    with exporter(sim, tmp_path, billing=billing) as exporter_url:
        wait_for(lambda: status_of(f"{exporter_url}/readyz") == 200)
        target = exporter_url.removeprefix("http://")
        with prometheus(tmp_path, target) as url:
            # Rates need two scrapes, and `offset 5s` needs recorded series older than 5 s.
            settled = "count_over_time(synthbrew:generation_billable_rows:increase1h[1m]) > 7"
            wait_for(lambda: bool(query(url, settled)[1]), within=90)
            problems = []
            for name, expr in grafana_exprs() + rule_exprs():
                status, result = query(url, expr)
                if status != "ok" or not result:
                    problems.append(f"{name}: {status}, {len(result)} series: {expr}")
    assert len(grafana_exprs()) >= 30
    assert not problems, "\n".join(problems)
