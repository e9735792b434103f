"""Upstream faults through the simulator over loopback: each shows up under the right reason,
``source_up`` is 0 while a source fails and 1 once it recovers, and healthy sources keep their
schedule meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.httpserver import ThreadedServer
from exporter.simulator import SimulatorApp
from tests.factories import config_data, make_scenario
from tests.runners import Sim, exporter, free_port, labels, scrape, wait_for

pytestmark = pytest.mark.e2e

FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "limited": ({"rate_limit_rpm": 1}, "rate_limited"),
    "limited_bare": (
        {"rate_limit_rpm": 1, "faults": {"retry_after_header": False}},
        "rate_limited",
    ),
    "burst": ({"faults": {"status": 503}}, "http_5xx"),
    "flaky": ({"faults": {"error_rate": 1.0}}, "http_5xx"),
    "hang": ({"faults": {"hang_seconds": 5}}, "timeout"),
    "malformed": ({"faults": {"malformed_rate": 1.0}}, "invalid_response"),
    "unauthorized": ({"faults": {"status": 401}}, "auth"),
    "forbidden": ({"faults": {"status": 403}}, "auth"),
    "missing": ({"faults": {"status": 404}}, "http_4xx"),
}
API = {
    "timeout_seconds": 1,
    "retry": {"attempts": 2, "backoff_seconds": 0.05, "max_retry_after_seconds": 1},
}


# A 429 holds its whole API key (exporter.budget): the rate-limited sources are in a project
# with a key of its own, so their holds do not stop the other sources, as with a real gateway.
LIMITED = {"limited", "limited_bare"}


def value(metrics: dict[str, Any], name: str, **lbl: str) -> float:
    project = "lab" if lbl.get("source") in LIMITED else "shop"
    return float(metrics.get(name, {}).get(labels(project=project, **lbl), -1))


def test_each_fault_is_reported_and_recovers(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sources = [{"name": "healthy"}, {"name": "invalid", "faults": {"invalid_event_rate": 0.5}}]
    sources += [{"name": n, **spec} for n, (spec, _) in FAULTS.items() if n not in LIMITED]
    limited = [{"name": n, **spec} for n, (spec, _) in FAULTS.items() if n in LIMITED]
    projects = [{"name": "shop", "sources": sources}, {"name": "lab", "sources": limited}]
    sim = start_sim(make_scenario([], projects=projects))
    configured = config_data(sim)["projects"]
    configured[1]["api_key"] = "sb_api_lab_key"
    sections: dict[str, Any] = {"api": API, "collector": {"interval_seconds": 1}}
    with exporter(sim, tmp_path, projects=configured, **sections) as url:

        def failing_as_expected() -> bool:
            m = scrape(url)
            return all(
                value(m, "synthbrew_exporter_source_up", source=name) == 0
                and value(m, "synthbrew_exporter_poll_errors_total", source=name, reason=reason)
                >= 1
                for name, (_, reason) in FAULTS.items()
            )

        wait_for(failing_as_expected, within=60)
        before = scrape(url)
        healthy_polls = value(
            before, "synthbrew_exporter_polls_total", source="healthy", outcome="success"
        )
        wait_for(
            lambda: (
                value(
                    scrape(url),
                    "synthbrew_exporter_polls_total",
                    source="healthy",
                    outcome="success",
                )
                >= healthy_polls + 3
            ),
            within=10,
        )
        during = scrape(url)
        for name in FAULTS:
            project_id, source_id = sim.ids("lab" if name in LIMITED else "shop", name)
            r = httpx.put(
                f"{sim.url}/_sim/faults/projects/{project_id}/sources/{source_id}",
                json={"faults": {}, "rate_limit_rpm": None},
            )
            assert r.status_code == 200
        wait_for(
            lambda: all(
                value(scrape(url), "synthbrew_exporter_source_up", source=name) == 1
                for name in FAULTS
            ),
            # The limited key is held for the Retry-After it got (<= 60 s), then paced at the
            # two requests a minute it was found to allow.
            within=150,
        )
        after = scrape(url)
    for name, (_, reason) in FAULTS.items():
        for other in {r for _, r in FAULTS.values()} - {reason}:
            if other == "timeout" and name == "hang":
                continue
            assert (
                value(during, "synthbrew_exporter_poll_errors_total", source=name, reason=other)
                == 0
            ), (name, other)
    assert value(during, "synthbrew_exporter_source_up", source="healthy") == 1
    assert value(during, "synthbrew_exporter_source_up", source="invalid") == 1
    assert value(during, "synthbrew_exporter_invalid_events_total", source="invalid") > 0
    assert all(value(after, "synthbrew_exporter_source_up", source=n) == 1 for n in FAULTS)


def test_connection_refused_then_recovered(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario([{"name": "orders"}]))
    port = free_port()
    api = {**API, "base_url": f"http://127.0.0.1:{port}/api"}
    with exporter(sim, tmp_path, api=api, collector={"interval_seconds": 1}) as url:
        wait_for(
            lambda: (
                value(
                    scrape(url),
                    "synthbrew_exporter_poll_errors_total",
                    source="orders",
                    reason="connect",
                )
                >= 1
            ),
            within=30,
        )
        assert value(scrape(url), "synthbrew_exporter_source_up", source="orders") == 0
        with ThreadedServer(SimulatorApp(sim.world).app, listen=f"127.0.0.1:{port}"):
            wait_for(
                lambda: value(scrape(url), "synthbrew_exporter_source_up", source="orders") == 1,
                within=30,
            )
