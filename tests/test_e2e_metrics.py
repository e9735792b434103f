"""``run`` end to end: every contract metric against the simulator's ground truth, restarts,
readiness and ``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.factories import make_scenario
from tests.runners import Sim, exporter, scrape, status_of, wait_for

pytestmark = pytest.mark.e2e
GENERATION = (
    "synthbrew_generation_runs_total",
    "synthbrew_generation_failures_total",
    "synthbrew_generation_billable_rows_total",
    "synthbrew_generation_inserted_rows_total",
    "synthbrew_generation_duration_seconds_bucket",
    "synthbrew_generation_duration_seconds_count",
    "synthbrew_generation_duration_seconds_sum",
    "synthbrew_generation_in_progress",
    "synthbrew_generation_last_finished_timestamp_seconds",
    "synthbrew_source_info",
)


def truth_metrics(
    sim: Sim, buckets: list[float]
) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """What the contract says the exporter must report, computed from the simulator alone."""
    now = sim.clock.now()
    out: dict[str, Counter[frozenset[tuple[str, str]]]] = defaultdict(Counter)
    last: dict[frozenset[tuple[str, str]], float] = {}
    for project in sim.world.scenario.projects:
        for source in project.sources:
            state = sim.world.source(project.id, source.id)
            base = {"project": project.name, "source": source.name}
            out["synthbrew_source_info"][
                frozenset(
                    {**base, "project_id": str(project.id), "source_id": str(source.id)}.items()
                )
            ] = 1
            for status in ("queued", "active"):
                out["synthbrew_generation_in_progress"][
                    frozenset({**base, "status": status}.items())
                ] += 0
            for spec in sim.world.runs(state, now, 200):
                if spec.corrupt >= 0:
                    continue
                e = sim.world.event(state, spec, now)
                status, trigger = e["status"], e["trigger"]
                if status in ("queued", "active"):
                    out["synthbrew_generation_in_progress"][
                        frozenset({**base, "status": status}.items())
                    ] += 1
                    continue
                key = frozenset({**base, "trigger": trigger}.items())
                keyed = frozenset({**base, "trigger": trigger, "status": status}.items())
                out["synthbrew_generation_runs_total"][keyed] += 1
                out["synthbrew_generation_failures_total"][key] += status == "failed"
                out["synthbrew_generation_billable_rows_total"][key] += e["billableRows"]
                out["synthbrew_generation_inserted_rows_total"][key] += e["totalInsertedRows"]
                seconds = e["durationMs"] / 1000
                for b in buckets:
                    le = frozenset(
                        {**base, "trigger": trigger, "status": status, "le": str(float(b))}.items()
                    )
                    out["synthbrew_generation_duration_seconds_bucket"][le] += seconds <= b
                inf = frozenset(
                    {**base, "trigger": trigger, "status": status, "le": "+Inf"}.items()
                )
                out["synthbrew_generation_duration_seconds_bucket"][inf] += 1
                out["synthbrew_generation_duration_seconds_count"][keyed] += 1
                out["synthbrew_generation_duration_seconds_sum"][keyed] += seconds
                finished = spec.finished_at.timestamp()
                lk = frozenset({**base, "status": status}.items())
                last[lk] = max(last.get(lk, 0.0), finished)
    result = {name: dict(values) for name, values in out.items()}
    result["synthbrew_generation_last_finished_timestamp_seconds"] = last
    return result


SCENARIO = [
    {"name": "orders", "runs_per_hour": 60, "failure_rate": 0.2, "duration_seconds": 600},
    {"name": "warehouse", "unknown_status_rate": 0.1, "faults": {"invalid_event_rate": 0.05}},
    {"name": "events", "runs_per_hour": 300, "duration_seconds": 30},
]
BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200]


def test_every_contract_metric_matches_ground_truth_and_survives_restart(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario(SCENARIO))
    expected = truth_metrics(sim, BUCKETS)
    with exporter(sim, tmp_path) as url:
        wait_for(lambda: status_of(f"{url}/readyz") == 200)
        first = scrape(url)
        page = httpx.get(f"{url}/").text
    for name in GENERATION:
        got = first.get(name, {})
        assert got.keys() == expected[name].keys(), name
        for labels, want in expected[name].items():
            assert got[labels] == pytest.approx(want), (name, dict(labels))
    for source in ("orders", "warehouse", "events"):
        labels = frozenset({"project": "shop", "source": source}.items())
        assert first["synthbrew_exporter_source_up"][labels] == 1
        assert f"<td>{source}</td>" in page
    warehouse = frozenset({"project": "shop", "source": "warehouse"}.items())
    assert first["synthbrew_exporter_invalid_events_total"][warehouse] > 0
    assert first["synthbrew_exporter_build_info"][frozenset({"version": "0.1.0"}.items())] == 1

    with exporter(sim, tmp_path) as url:
        before_ready = scrape(url)
        wait_for(lambda: status_of(f"{url}/readyz") == 200)
        second = scrape(url)
    for name in GENERATION:
        assert before_ready.get(name, {}) == first.get(name, {}), f"{name} kept across restart"
        assert second.get(name, {}) == first.get(name, {}), name


def test_readyz_waits_for_every_source(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(
        make_scenario([{"name": "fast"}, {"name": "slow", "faults": {"latency_ms": 1500}}])
    )
    with exporter(sim, tmp_path) as url:
        assert status_of(f"{url}/readyz") == 503
        wait_for(lambda: status_of(f"{url}/readyz") == 200)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_promtool_check_metrics_finds_nothing(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario(SCENARIO))
    with exporter(sim, tmp_path) as url:
        wait_for(lambda: status_of(f"{url}/readyz") == 200)
        text = httpx.get(f"{url}/metrics").text
    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout + lint.stderr == ""
