"""One poll of one source, against the simulator over loopback and a real DuckDB file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.config import PollingConfig
from exporter.next_poll import Plan, plan_next, poll_interval
from exporter.poller import PollResult, poll_all
from exporter.targets import targets
from tests.factories import make_scenario, stored, target, truth
from tests.runners import Sim, running


async def test_each_run_stored_once_however_often_polled(sim: Sim, tmp_path: Path) -> None:
    async with running(sim, tmp_path / "x.duckdb") as (c, store, _):
        for _ in range(3):
            result = await c.poll(target(c, "orders"))
            assert result.ok
        assert stored(store) == truth(sim, "orders")
        finished = (
            store.cursor()
            .execute(
                "SELECT count(*), count(DISTINCT id) FROM events WHERE finished_at IS NOT NULL"
            )
            .fetchone()
        )
    assert finished is not None
    assert finished[0] == finished[1] > 0


async def test_status_transitions_follow_the_upstream(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders", "duration_seconds": 900}]))
    async with running(sim, tmp_path / "x.duckdb") as (c, store, _):
        await c.poll(target(c, "orders"))
        before = stored(store)
        in_progress = {i for i, s in before.items() if s in ("queued", "active")}
        assert in_progress, "the scenario has runs in flight at the frozen instant"
        sim.clock.advance(3 * 3600)
        await c.poll(target(c, "orders"))
        after = stored(store)
    assert all(after[i] in ("success", "failed") for i in in_progress)
    assert {i: s for i, s in after.items() if i in truth(sim, "orders")} == truth(sim, "orders")


async def test_finished_runs_seen_before_are_not_written_again(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders", "duration_seconds": 900}]))
    db = tmp_path / "x.duckdb"
    sql = "SELECT id, (status, last_seen_at) FROM events"
    async with running(sim, db) as (c, store, _):
        await c.poll(target(c, "orders"))
        first = stored(store, sql)
    sim.clock.advance(600)
    # A restart: the window the next poll is compared with comes from the database.
    async with running(sim, db) as (c, store, _):
        await c.poll(target(c, "orders"))
        second = stored(store, sql)
    finished = {i for i, (status, _) in first.items() if status in ("success", "failed")}
    in_flight = set(first) - finished
    assert finished, "the scenario has finished runs at the frozen instant"
    assert in_flight, "and runs in flight"
    assert {i: second[i] for i in finished} == {i: first[i] for i in finished}, "not rewritten"
    assert all(second[i][1] > first[i][1] for i in in_flight), "runs in flight are seen again"
    assert {i: s for i, (s, _) in second.items() if i in truth(sim, "orders")} == truth(
        sim, "orders"
    )


async def test_window_overflow_is_detected(start_sim: Callable[..., Sim], tmp_path: Path) -> None:
    sim = start_sim(make_scenario([{"name": "orders", "runs_per_hour": 600}]))
    async with running(sim, tmp_path / "x.duckdb") as (c, _, registry):
        first = await c.poll(target(c, "orders"))
        assert not first.possible_gap, "the first poll cannot know what came before"
        sim.clock.advance(3600)
        second = await c.poll(target(c, "orders"))
        sim.clock.advance(60)
        third = await c.poll(target(c, "orders"))
    assert second.possible_gap
    assert second.plan.interval_seconds == 30, "polled sooner after an overflow"
    assert not third.possible_gap
    value = registry.get_sample_value(
        "synthbrew_exporter_possible_missed_events_total", {"project": "shop", "source": "orders"}
    )
    assert value == 1


async def test_quiet_source_gets_a_small_page_and_falls_back(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders", "runs_per_hour": 6, "duration_seconds": 10}]))
    async with running(sim, tmp_path / "x.duckdb", quiet_page_limit=20) as (c, store, _):
        first = await c.poll(target(c, "orders"))
        assert first.requested == 200
        assert first.plan.limit == 20, "its first page shows a quiet source: a small page next"
        quiet = await c.poll(target(c, "orders"))
        assert quiet.requested == 20
        assert quiet.plan.limit == 20
        sim.clock.advance(6 * 3600)
        burst = await c.poll(target(c, "orders"))
        assert stored(store) == truth(sim, "orders")
    assert burst.requested == 200, "the small page was all new, so the full window was fetched"


async def test_invalid_events_are_skipped_and_counted(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(
        make_scenario(
            [{"name": "orders", "runs_per_hour": 60, "faults": {"invalid_event_rate": 0.2}}]
        )
    )
    async with running(sim, tmp_path / "x.duckdb") as (c, store, registry):
        result = await c.poll(target(c, "orders"))
        ids = set(stored(store))
    state = sim.state("shop", "orders")
    runs = sim.world.runs(state, sim.clock.now(), 200)
    corrupt = {r.id for r in runs if r.corrupt >= 0}
    assert result.ok
    assert result.invalid == len(corrupt) > 0
    assert ids == {r.id for r in runs} - corrupt
    labels = {"project": "shop", "source": "orders"}
    assert registry.get_sample_value("synthbrew_exporter_invalid_events_total", labels) == len(
        corrupt
    )


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"status": 503}, "http_5xx"),
        ({"status": 401}, "auth"),
        ({"status": 404}, "http_4xx"),
        ({"malformed_rate": 1.0}, "invalid_response"),
        ({"hang_seconds": 3}, "timeout"),
    ],
)
async def test_failing_source_is_recorded_and_does_not_block_others(
    start_sim: Callable[..., Sim], tmp_path: Path, faults: dict[str, Any], reason: str
) -> None:
    sim = start_sim(make_scenario([{"name": "bad", "faults": faults}, {"name": "good"}]))
    api = {"timeout_seconds": 1, "retry": {"attempts": 2, "backoff_seconds": 0.05}}
    order: list[str] = []
    async with running(sim, tmp_path / "x.duckdb", api) as (c, store, registry):
        results = await poll_all(c, targets(c.config), lambda r: order.append(r.target.source.name))
        by_name = {r.target.source.name: r for r in results}
        states = store.poll_states()
    assert by_name["good"].ok
    assert not by_name["bad"].ok
    assert by_name["bad"].reason == reason
    if faults.get("hang_seconds"):
        assert order == ["good", "bad"], "the healthy source finished while the other hung"
    bad_state = states[target(c, "bad").key]
    assert (bad_state.last_outcome, bad_state.last_error_reason) == ("error", reason)
    labels = {"project": "shop", "source": "bad"}
    assert registry.get_sample_value("synthbrew_exporter_source_up", labels) == 0
    assert (
        registry.get_sample_value(
            "synthbrew_exporter_poll_errors_total", {**labels, "reason": reason}
        )
        == 1
    )
    assert (
        registry.get_sample_value("synthbrew_exporter_polls_total", {**labels, "outcome": "error"})
        == 1
    )
    good = {"project": "shop", "source": "good"}
    assert registry.get_sample_value("synthbrew_exporter_source_up", good) == 1


async def test_rate_limited_source_reports_rate_limited(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim(make_scenario([{"name": "orders", "rate_limit_rpm": 1}]))
    api = {"retry": {"attempts": 2, "max_retry_after_seconds": 1}}
    async with running(sim, tmp_path / "x.duckdb", api) as (c, _, _):
        assert (await c.poll(target(c, "orders"))).ok
        limited = await c.poll(target(c, "orders"))
    assert limited.reason == "rate_limited"


async def test_restart_resumes_the_same_state(sim: Sim, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    async with running(sim, db, quiet_page_limit=10) as (c, store, _):
        await c.poll(target(c, "orders"))
        plan = c.state(target(c, "orders")).plan
        before = stored(store)
    async with running(sim, db, quiet_page_limit=10) as (c, store, _):
        assert c.state(target(c, "orders")).plan == plan, "adaptive plan restored from poll_state"
        assert stored(store) == before
        again = await c.poll(target(c, "orders"))
    assert not again.possible_gap
    assert again.new == 0


def test_plan_next_rule() -> None:
    cfg = PollingConfig(
        interval_seconds=60, page_limit=200, quiet_page_limit=20, min_interval_seconds=10
    )
    full = Plan(200, 60)
    busy = plan_next(cfg, 60, full, requested=200, received=200, new=150, deepest_in_flight=3)
    assert busy == Plan(200, 30)
    busier = plan_next(
        cfg, 60, Plan(200, 15), requested=200, received=200, new=200, deepest_in_flight=None
    )
    assert busier == Plan(200, 10), "never below the floor"
    calm = plan_next(
        cfg, 60, Plan(200, 15), requested=200, received=200, new=5, deepest_in_flight=None
    )
    assert calm == Plan(20, 30), "back toward the interval, small page"
    first = plan_next(
        cfg, 60, full, requested=200, received=200, new=200, deepest_in_flight=None, first=True
    )
    assert first.interval_seconds == 60
    waiting = plan_next(cfg, 60, full, requested=200, received=50, new=0, deepest_in_flight=30)
    assert waiting == Plan(200, 60), "a run in flight deep in the window needs the full window"
    top = plan_next(cfg, 60, full, requested=200, received=50, new=0, deepest_in_flight=2)
    assert top == Plan(20, 60), "runs in flight near the top are seen by the small page"
    default = PollingConfig(interval_seconds=60, page_limit=200)
    always = plan_next(default, 60, full, requested=200, received=50, new=0, deepest_in_flight=None)
    assert always == Plan(200, 60), "without quiet_page_limit every poll asks for page_limit"


ADAPTIVE = PollingConfig(
    interval_seconds=60,
    min_interval_seconds=10,
    in_flight_interval_seconds=20,
    max_interval_seconds=600,
)


@pytest.mark.parametrize(
    ("case", "current", "overflowing", "in_flight", "idle", "expected"),
    [
        ("overflowing halves", 60, True, True, 0, 30),
        ("overflowing never below the floor", 15, True, False, 0, 10),
        ("a run in flight: the in-flight interval", 60, False, True, 5, 20),
        ("in flight after an overflow: still recovering", 5, False, True, 5, 10),
        ("in flight from an idle stretch: at once", 600, False, True, 3600, 20),
        ("just active: the interval", 60, False, False, 30, 60),
        ("idle ten minutes: the interval", 60, False, False, 600, 60),
        ("idle an hour: six minutes", 60, False, False, 3600, 360),
        ("idle a day: the maximum", 360, False, False, 86400, 600),
        ("never ran: the maximum", 60, False, False, float("inf"), 600),
        ("recovering from an overflow while idle: doubling first", 10, False, False, 0, 20),
        ("nothing known of idleness: the interval", 60, False, False, None, 60),
    ],
)
def test_poll_interval_rule(
    case: str,
    current: float,
    overflowing: bool,
    in_flight: bool,
    idle: float | None,
    expected: float,
) -> None:
    interval = poll_interval(
        ADAPTIVE, 60, current, overflowing=overflowing, in_flight=in_flight, idle_seconds=idle
    )
    assert interval == expected, case


def test_poll_interval_defaults_keep_the_configured_interval() -> None:
    default = PollingConfig(interval_seconds=60)
    for in_flight, idle in [(True, 0.0), (False, 86400.0), (False, float("inf"))]:
        assert (
            poll_interval(
                default, 60, 60, overflowing=False, in_flight=in_flight, idle_seconds=idle
            )
            == 60
        )


@pytest.mark.parametrize("limit", [1, 3])
async def test_polls_run_concurrently_within_max_concurrency(
    start_sim: Callable[..., Sim], tmp_path: Path, limit: int
) -> None:
    sources = [{"name": f"s{i}", "faults": {"latency_ms": 200}} for i in range(5)]
    sim = start_sim(make_scenario(sources))
    async with running(sim, tmp_path / "x.duckdb", {"max_concurrency": limit}) as (c, _, _):
        results: list[PollResult] = await poll_all(c, targets(c.config))
    assert all(r.ok for r in results)
    assert sim.app.max_in_flight == limit, "polls overlap, up to api.max_concurrency at once"
