"""The client against the simulator over real loopback HTTP: one test per error class and fault."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from exporter.budget import BACKOFF_SECONDS, Budgets
from exporter.client import (
    AuthError,
    ClientHttpError,
    ConnectError,
    InvalidResponseError,
    RateLimitedError,
    ServerHttpError,
    SynthbrewClient,
    UpstreamError,
    UpstreamTimeout,
    parse_retry_after,
)
from exporter.config import ApiConfig
from exporter.models import RegenerateRequest
from tests.factories import API_KEY, make_scenario
from tests.runners import Sim

KEY = SecretStr(API_KEY)


class Sleeps:
    """Records sleeps instead of waiting them out. Its clock is what was slept, and nothing
    else, so a key's budget (which waits on a clock) sees exactly the time the test lets pass."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    def clock(self) -> float:
        return sum(self.calls)


def client_for(base_url: str, sleeps: Sleeps | None = None, **api: Any) -> SynthbrewClient:
    config = ApiConfig.model_validate({"base_url": base_url, "api_key": API_KEY, **api})
    sleeps = sleeps or Sleeps()
    budgets = Budgets(config.requests_per_minute, clock=sleeps.clock, sleep=sleeps)
    return SynthbrewClient(config, sleep=sleeps, budgets=budgets)


def faulty(start_sim: Callable[..., Sim], **source: Any) -> tuple[Sim, Any, Any]:
    sim = start_sim(make_scenario([{"name": "orders", **source}]))
    return sim, *sim.ids("shop", "orders")


async def test_list_round_trip_matches_ground_truth(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    async with client_for(sim.base_url) as client:
        page = await client.list_generation_events(project, source, api_key=KEY, limit=200)
    truth = sim.world.runs(sim.state("shop", "orders"), sim.clock.now(), 200)
    assert [e.id for e in page.events] == [r.id for r in truth]
    assert page.invalid == []
    queued = [e.queued_at for e in page.events]
    assert queued == sorted(queued, reverse=True), "newest first"
    assert all(e.project_id == project and e.source_id == source for e in page.events)


async def test_limit_is_honoured_and_checked(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    async with client_for(sim.base_url) as client:
        page = await client.list_generation_events(project, source, api_key=KEY, limit=3)
        assert len(page.events) == 3
        with pytest.raises(ValueError, match=r"1\.\.200"):
            await client.list_generation_events(project, source, api_key=KEY, limit=201)


async def test_simulator_rejects_out_of_range_limit_with_422(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    url = f"{sim.base_url}/public/v1/projects/{project}/sources/{source}/generation-events"
    async with httpx.AsyncClient() as http:
        for limit in ("0", "201", "x"):
            r = await http.get(url, params={"limit": limit}, headers={"x-api-key": API_KEY})
            assert r.status_code == 422, limit


async def test_regenerate_queue_mode_round_trip(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    async with client_for(sim.base_url) as client:
        answer = await client.regenerate(
            project, source, api_key=KEY, request=RegenerateRequest(seed="abc")
        )
    assert answer.mode == "queue"
    assert answer.source.id == source
    assert answer.source.seed == "abc"
    assert answer.generation_job is not None
    state = sim.state("shop", "orders")
    assert answer.generation_job.id == state.manual[-1].job_id
    assert state.seed == "abc"


async def test_regenerate_null_seed_clears_it(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    async with client_for(sim.base_url) as client:
        await client.regenerate(project, source, api_key=KEY, request=RegenerateRequest(seed="a"))
        kept = await client.regenerate(project, source, api_key=KEY)
        assert kept.source.seed == "a", "an absent seed leaves it alone"
        cleared = await client.regenerate(
            project, source, api_key=KEY, request=RegenerateRequest(seed=None)
        )
    assert cleared.source.seed is None


async def test_regenerate_inline_mode(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, execution_mode="inline")
    async with client_for(sim.base_url) as client:
        answer = await client.regenerate(project, source, api_key=KEY)
    assert answer.mode == "inline"
    assert answer.generation is not None
    assert answer.generation["status"] in {"success", "failed"}
    assert answer.generation["trigger"] == "regenerate"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 500}, ServerHttpError),
        ({"error_rate": 1.0}, ServerHttpError),
        ({"status": 404}, ClientHttpError),
        ({"status": 400}, ClientHttpError),
        ({"status": 403}, AuthError),
        ({"malformed_rate": 1.0}, InvalidResponseError),
    ],
)
async def test_each_fault_maps_to_its_error(
    start_sim: Callable[..., Sim], fault: dict[str, Any], error: type[UpstreamError]
) -> None:
    sim, project, source = faulty(start_sim, faults=fault)
    async with client_for(sim.base_url) as client:
        with pytest.raises(error) as caught:
            await client.list_generation_events(project, source, api_key=KEY)
    assert caught.value.reason == error.reason


async def test_wrong_key_is_auth_and_not_retried(sim: Sim) -> None:
    project, source = sim.ids("shop", "orders")
    sleeps = Sleeps()
    async with client_for(sim.base_url, sleeps) as client:
        with pytest.raises(AuthError):
            await client.list_generation_events(project, source, api_key=SecretStr("nope"))
    assert sleeps.calls == []


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_client_errors_are_never_retried(start_sim: Callable[..., Sim], status: int) -> None:
    sim, project, source = faulty(start_sim, faults={"status": status})
    sleeps = Sleeps()
    async with client_for(sim.base_url, sleeps, retry={"attempts": 5}) as client:
        with pytest.raises(UpstreamError):
            await client.list_generation_events(project, source, api_key=KEY)
    assert sim.state("shop", "orders").requests == 1
    assert sleeps.calls == []


async def test_unknown_source_is_404(sim: Sim) -> None:
    project, _ = sim.ids("shop", "orders")
    async with client_for(sim.base_url) as client:
        with pytest.raises(ClientHttpError) as caught:
            await client.list_generation_events(project, project, api_key=KEY)
    assert caught.value.status_code == 404


async def test_5xx_is_retried_with_backoff_then_gives_up(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, faults={"status": 503})
    sleeps = Sleeps()
    retry = {"attempts": 4, "backoff_seconds": 1, "max_backoff_seconds": 3}
    async with client_for(sim.base_url, sleeps, retry=retry) as client:
        with pytest.raises(ServerHttpError):
            await client.list_generation_events(project, source, api_key=KEY)
    assert sim.state("shop", "orders").requests == 4
    assert len(sleeps.calls) == 3
    assert all(0 <= s <= cap for s, cap in zip(sleeps.calls, [1, 2, 3], strict=True))


async def test_rate_limit_honours_retry_after(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, rate_limit_rpm=2)
    sleeps = Sleeps()

    async def sleep_on_sim_clock(seconds: float) -> None:
        await sleeps(seconds)
        sim.clock.advance(seconds)

    config = ApiConfig.model_validate({"base_url": sim.base_url, "retry": {"attempts": 3}})
    budgets = Budgets(clock=sleeps.clock, sleep=sleep_on_sim_clock)
    async with SynthbrewClient(config, sleep=sleep_on_sim_clock, budgets=budgets) as client:
        for _ in range(2):
            await client.list_generation_events(project, source, api_key=KEY, limit=1)
        sim.clock.advance(15)
        page = await client.list_generation_events(project, source, api_key=KEY, limit=1)
    assert len(page.events) == 1
    assert sleeps.calls == [45.0], "waited exactly what Retry-After said"


async def test_rate_limit_without_retry_after_backs_off(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, rate_limit_rpm=1, faults={"retry_after_header": False})
    sleeps = Sleeps()
    async with client_for(sim.base_url, sleeps, retry={"attempts": 2}) as client:
        await client.list_generation_events(project, source, api_key=KEY, limit=1)
        with pytest.raises(RateLimitedError) as caught:
            await client.list_generation_events(project, source, api_key=KEY, limit=1)
    assert caught.value.retry_after is None
    # The key is held for the backoff, then paced at what the upstream accepted (1 a minute).
    assert sleeps.calls[0] == BACKOFF_SECONDS
    assert sum(sleeps.calls) == pytest.approx(60, abs=0.01)


async def test_retry_after_longer_than_allowed_fails_fast(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, rate_limit_rpm=1)
    sleeps = Sleeps()
    retry = {"attempts": 5, "max_retry_after_seconds": 10}
    async with client_for(sim.base_url, sleeps, retry=retry) as client:
        await client.list_generation_events(project, source, api_key=KEY, limit=1)
        with pytest.raises(RateLimitedError) as caught:
            await client.list_generation_events(project, source, api_key=KEY, limit=1)
    assert caught.value.retry_after == 60
    assert sleeps.calls == []


async def test_hang_past_timeout_is_timeout(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, faults={"hang_seconds": 2})
    async with client_for(sim.base_url, timeout_seconds=0.3, retry={"attempts": 1}) as client:
        with pytest.raises(UpstreamTimeout):
            await client.list_generation_events(project, source, api_key=KEY)


async def test_connection_refused_is_connect_and_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    async with client_for(f"http://127.0.0.1:{port}/api", sleeps, retry={"attempts": 3}) as c:
        with pytest.raises(ConnectError):
            await c.list_generation_events(*(2 * [__import__("uuid").uuid4()]), api_key=KEY)
    assert len(sleeps.calls) == 2


async def test_regenerate_is_not_retried_on_5xx(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, faults={"status": 502})
    sleeps = Sleeps()
    async with client_for(sim.base_url, sleeps, retry={"attempts": 4}) as client:
        with pytest.raises(ServerHttpError):
            await client.regenerate(project, source, api_key=KEY)
    assert sim.state("shop", "orders").requests == 1


async def test_page_with_invalid_events_yields_the_rest(start_sim: Callable[..., Sim]) -> None:
    sim, project, source = faulty(start_sim, runs_per_hour=60, faults={"invalid_event_rate": 0.3})
    async with client_for(sim.base_url) as client:
        page = await client.list_generation_events(project, source, api_key=KEY, limit=100)
    truth = sim.world.runs(sim.state("shop", "orders"), sim.clock.now(), 100)
    corrupt = {r.id for r in truth if r.corrupt >= 0}
    assert corrupt, "the scenario must produce some invalid events"
    assert len(page.invalid) == len(corrupt)
    assert {e.id for e in page.events} == {r.id for r in truth} - corrupt


async def test_key_never_appears_in_errors_or_logs(
    start_sim: Callable[..., Sim], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim, project, source = faulty(start_sim, faults={"status": 503})
    secret = SecretStr("sb_api_SUPERSECRET_never_show_me")
    client = client_for(sim.base_url, retry={"attempts": 3})
    messages = [repr(client)]
    async with client:
        for call in (
            client.list_generation_events(project, source, api_key=secret),
            client.regenerate(project, source, api_key=secret),
        ):
            with pytest.raises(UpstreamError) as caught:
                await call
            messages += [str(caught.value), repr(caught.value)]
    messages += [r.getMessage() for r in caplog.records]
    assert any("retry" in m for m in messages), "the retries were logged"
    assert not [m for m in messages if "SUPERSECRET" in m]


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
