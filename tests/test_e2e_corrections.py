"""``run`` end to end against a simulator that retries failed runs under the same id and corrects
billable rows after the fact: no exposed counter ever goes down (restart included), and each
counter minus its ``_retracted`` twin is the simulator's current truth."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from tests.factories import make_scenario
from tests.runners import Sim, exporter, scrape, status_of, wait_for

pytestmark = pytest.mark.e2e
Samples = dict[str, dict[frozenset[tuple[str, str]], float]]

SCENARIO = [
    {
        "name": name,
        "runs_per_hour": 60,
        "duration_seconds": 30,
        "queue_wait_seconds": 2,
        "failure_rate": 0.4,
        "retry_rate": 1.0,
        "retry_delay_seconds": 120,
        "correction_rate": 0.5,
        "correction_delay_seconds": 180,
    }
    for name in ("orders", "customers")
]


def truth(sim: Sim) -> tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]]]:
    """Finished runs per (source, trigger, status) and billable rows per (source, trigger),
    as the simulator shows them now."""
    runs: Counter[tuple[str, ...]] = Counter()
    billable: Counter[tuple[str, ...]] = Counter()
    now = sim.clock.now()
    for project in sim.world.scenario.projects:
        for source in project.sources:
            state = sim.world.source(project.id, source.id)
            for spec in sim.world.runs(state, now, 200):
                event = sim.world.event(state, spec, now)
                if event["status"] in ("queued", "active"):
                    continue
                runs[(source.name, event["trigger"], event["status"])] += 1
                billable[(source.name, event["trigger"])] += event["billableRows"]
    return runs, billable


def net(samples: Samples, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    """``name`` minus its retracted twin, keyed by the source and the given labels."""
    out: Counter[tuple[str, ...]] = Counter()
    for suffix, sign in (("_total", 1), ("_retracted_total", -1)):
        for key, value in samples.get(f"{name}{suffix}", {}).items():
            found = dict(key)
            out[(found["source"], *(found[label] for label in labels))] += sign * value
    return +out


def counters(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (name, key): value
        for name, series in samples.items()
        if name.startswith("synthbrew_generation_")
        and name.endswith(("_total", "_bucket", "_count", "_sum"))
        for key, value in series.items()
    }


def test_counters_never_go_down_and_net_of_retractions_equal_the_truth(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario(SCENARIO))
    seen: list[dict[tuple[str, frozenset[tuple[str, str]]], float]] = []

    def caught_up(url: str) -> bool:
        samples = scrape(url)
        runs, billable = truth(sim)
        if net(samples, "synthbrew_generation_runs", "trigger", "status") != runs:
            return False
        if net(samples, "synthbrew_generation_billable_rows", "trigger") != billable:
            return False
        seen.append(counters(samples))
        return True

    for leg in range(2):  # the second leg is a restart on the same database
        with exporter(sim, tmp_path) as url:
            wait_for(lambda: status_of(f"{url}/readyz") == 200)
            for _ in range(4):
                wait_for(lambda: caught_up(url), within=60)
                sim.clock.advance(240 if leg == 0 else 300)
    for earlier, later in pairwise(seen):
        for key, value in earlier.items():
            assert later.get(key, -1) >= value, f"{key} went down: {value} -> {later.get(key)}"
    assert len(seen) == 8
    retracted = {name for (name, _), value in seen[-1].items() if "_retracted_" in name and value}
    assert "synthbrew_generation_runs_retracted_total" in retracted, "a failed run was retried"
    assert "synthbrew_generation_billable_rows_retracted_total" in retracted, "and one corrected"
