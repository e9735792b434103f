"""The Grafana dashboards and provisioning, checked as code."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parent.parent
GRAFANA = ROOT / "grafana"


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_committed_json_is_what_the_builder_makes() -> None:
    module = builder()
    assert set(module.DASHBOARDS) == set(dashboards())
    for name, built in dashboards().items():
        assert module.render(name) == (GRAFANA / "dashboards" / f"{name}.json").read_text(), (
            f"{name}.json is stale: run python grafana/build_dashboards.py"
        )
        assert built["title"].startswith("Synthbrew / ")


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    found = dashboards()
    assert set(found) == {"usage-billing", "generation-health", "exporter"}
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", ["usage-billing", "generation-health", "exporter"])
def test_every_panel_is_described_with_units_and_a_prometheus_query(name: str) -> None:
    dashboard = dashboards()[name]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "project", "source"} <= variables
    for panel in panels(dashboard):
        title = panel["title"]
        assert panel["description"], title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], title
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["refId"], title
            assert target["datasource"]["uid"] == "${datasource}", title
            for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{title}: use $__rate_interval, not {window}"
            if "synthbrew_" in expr and "synthbrew_exporter_build_info" not in expr:
                uses_vars = "$project" in expr
                assert uses_vars or "store_scrape" in expr, f"{title}: honours $project"


@pytest.mark.parametrize("name", ["usage-billing", "generation-health", "exporter"])
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboards()[name]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_provisioning_files() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    [ds] = datasource["datasources"]
    assert ds["type"] == "prometheus"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/synthbrew.yaml").read_text())
    [p] = provider["providers"]
    assert p["type"] == "file"
    assert p["options"]["path"].startswith("/")
