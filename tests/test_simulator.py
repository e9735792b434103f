"""The simulator's own promises: determinism, status over time, regenerate, control API."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import httpx

from exporter.simulator import SimClock, World, demo_scenario
from tests.factories import API_KEY, EPOCH, make_scenario
from tests.runners import Sim


def test_same_seed_same_events_different_seed_different() -> None:
    clock = SimClock()
    clock.set(EPOCH + timedelta(hours=3))
    scenario = make_scenario([{"name": "orders"}])
    a, b = World(scenario, clock), World(make_scenario([{"name": "orders"}]), clock)
    state_a, state_b = next(iter(a.sources.values())), next(iter(b.sources.values()))
    assert a.page(state_a, 200) == b.page(state_b, 200)
    other = World(make_scenario([{"name": "orders"}], seed=8), clock)
    assert other.page(next(iter(other.sources.values())), 5) != a.page(state_a, 5)


def test_a_run_moves_through_its_statuses_under_one_id() -> None:
    clock = SimClock()
    clock.set(EPOCH)
    world = World(make_scenario([{"name": "orders", "queue_wait_seconds": 10}]), clock)
    state = next(iter(world.sources.values()))
    spec = world.runs(state, EPOCH + timedelta(hours=1))[-1]
    seen = []
    for when in (spec.queued_at, spec.started_at, spec.finished_at):
        event = world.event(state, spec, when)
        seen.append((event["id"], event["status"], event["updatedAt"] is not None))
    assert [s[1] for s in seen][:2] == ["queued", "active"]
    assert seen[2][1] in {"success", "failed"}
    assert len({s[0] for s in seen}) == 1
    final = world.event(state, spec, spec.finished_at)
    assert final["durationMs"] == (spec.finished_at - spec.started_at) / timedelta(milliseconds=1)
    assert final["finishedAt"] is not None


def test_newest_first_and_window(start_sim: Callable[..., Sim]) -> None:
    sim = start_sim(make_scenario([{"name": "orders", "runs_per_hour": 120}]))
    project, source = sim.ids("shop", "orders")
    url = f"{sim.base_url}/public/v1/projects/{project}/sources/{source}/generation-events"
    events = httpx.get(url, headers={"x-api-key": API_KEY}, params={"limit": 200}).json()
    assert len(events) == 200, "two hours at 120/h is more than one window"
    assert [e["queuedAt"] for e in events] == sorted((e["queuedAt"] for e in events), reverse=True)
    default = httpx.get(url, headers={"x-api-key": API_KEY}).json()
    assert len(default) == 50, "the documented default limit"


def test_clock_control_and_truth(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    before = httpx.get(f"{sim.url}/_sim/truth/projects/{project}/sources/{source}").json()
    r = httpx.post(f"{sim.url}/_sim/clock", json={"advance": 3600})
    assert r.status_code == 200
    after = httpx.get(f"{sim.url}/_sim/truth/projects/{project}/sources/{source}").json()
    assert len(after) > len(before)
    assert {e["id"] for e in before} <= {e["id"] for e in after}


def test_project_key_is_enforced(start_sim: Callable[..., Sim]) -> None:
    scenario = make_scenario([{"name": "orders"}])
    scenario.projects[0].api_key = "sb_api_only_this"
    sim = start_sim(scenario)
    project, source = sim.ids("shop", "orders")
    url = f"{sim.base_url}/public/v1/projects/{project}/sources/{source}/generation-events"
    assert httpx.get(url, headers={"x-api-key": "sb_api_other"}).status_code == 403
    assert httpx.get(url, headers={"x-api-key": "sb_api_only_this"}).status_code == 200


def test_regenerated_run_appears_in_the_list_with_its_job(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    base = f"{sim.base_url}/public/v1/projects/{project}/sources/{source}"
    answer = httpx.post(f"{base}/regenerate", headers={"x-api-key": API_KEY}, json={}).json()
    job = answer["generationJob"]["id"]
    [newest] = httpx.get(
        f"{base}/generation-events", headers={"x-api-key": API_KEY}, params={"limit": 1}
    ).json()
    assert newest["trigger"] == "regenerate"
    assert newest["status"] == "queued"
    assert newest["metadata"]["queueJobId"] == job
    assert newest["id"] == answer["generationJob"]["result"]["generationEventId"]


def test_regenerate_rejects_a_bad_body(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    url = f"{sim.base_url}/public/v1/projects/{project}/sources/{source}/regenerate"
    r = httpx.post(url, headers={"x-api-key": API_KEY}, json={"schemaVersionId": "nope"})
    assert r.status_code == 400


def test_demo_scenario_has_distinct_ids() -> None:
    scenario = demo_scenario()
    ids = [s.id for p in scenario.projects for s in p.sources]
    assert len(ids) == len(set(ids)) == 6


def test_a_failed_run_can_be_retried_under_the_same_id() -> None:
    scenario = make_scenario(
        [{"name": "jobs", "failure_rate": 1.0, "retry_rate": 1.0, "retry_delay_seconds": 60}]
    )
    clock = SimClock()
    world = World(scenario, clock)
    state = next(iter(world.sources.values()))
    spec = world.runs(state, EPOCH + timedelta(hours=1), 1)[0]
    assert spec.retry is not None
    seen = []
    for when in (spec.finished_at, spec.retry.requeued_at, spec.retry.started_at):
        event = world.event(state, spec, when)
        seen.append(event["status"])
        assert event["id"] == str(spec.id)
        assert event["queuedAt"] == world.event(state, spec, spec.queued_at)["queuedAt"]
    final = world.event(state, spec, spec.retry.finished_at)
    assert seen == ["failed", "queued", "active"]
    assert final["status"] == spec.retry.final_status
    assert final["updatedAt"] > world.event(state, spec, spec.finished_at)["updatedAt"]


def test_billable_rows_can_be_corrected_after_the_run() -> None:
    scenario = make_scenario([{"name": "jobs", "failure_rate": 0.0, "correction_rate": 1.0}])
    world = World(scenario, SimClock())
    state = next(iter(world.sources.values()))
    spec = world.runs(state, EPOCH + timedelta(hours=1), 1)[0]
    assert spec.correction is not None
    before = world.event(state, spec, spec.finished_at)
    after = world.event(state, spec, spec.correction.at)
    assert after["billableRows"] == spec.correction.billable_rows < before["billableRows"]
    assert after["updatedAt"] > before["updatedAt"]
    assert after["status"] == before["status"] == "success"


def test_retries_and_corrections_leave_every_first_attempt_as_it_was() -> None:
    """They draw from their own generator: the runs themselves stay what the seed made them."""
    base = {"name": "jobs", "failure_rate": 0.3}
    plain = World(make_scenario([base]), SimClock())
    later = World(make_scenario([{**base, "retry_rate": 1.0, "correction_rate": 1.0}]), SimClock())
    at = EPOCH + timedelta(hours=2)
    runs = [w.runs(next(iter(w.sources.values())), at, 50) for w in (plain, later)]
    first = [
        [(r.id, r.queued_at, r.finished_at, r.final_status, r.rows) for r in rs] for rs in runs
    ]
    assert first[0] == first[1]
    assert not any(r.retry or r.correction for r in runs[0])
    assert any(r.retry for r in runs[1])
    assert any(r.correction for r in runs[1])


def test_the_served_body_is_the_page_at_every_instant_with_settled_runs_rendered_once() -> None:
    """``page_json`` keeps the bodies of runs that can no longer change; a run still moving
    (queued, active, awaiting its retry or its correction) is rendered at each request."""
    scenario = make_scenario(
        [
            {
                "name": "jobs",
                "failure_rate": 0.5,
                "retry_rate": 0.5,
                "retry_delay_seconds": 600,
                "correction_rate": 0.3,
                "queue_wait_seconds": 30,
            }
        ]
    )
    clock = SimClock()
    world = World(scenario, clock)
    state = next(iter(world.sources.values()))
    moving = 0
    for minutes in range(60, 240, 7):
        clock.set(EPOCH + timedelta(minutes=minutes))
        specs = world.runs(state, clock.now(), 50)
        moving += sum(clock.now() < s.settled_at for s in specs)
        assert json.loads(world.page_json(state, 50)) == world.page(state, 50)
    assert moving, "no run was caught between its statuses: the check would prove nothing"
    assert world._settled, "no settled run was kept"
