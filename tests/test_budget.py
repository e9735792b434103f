"""Request budgets per API key: the bucket's arithmetic on a virtual clock, then the behaviour a
user sees against the simulator over real HTTP (counts of requests, not timings)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from exporter.budget import (
    BURST_SECONDS,
    DECREASE,
    MARGIN,
    PROBE_AFTER_SECONDS,
    PROBE_STEP,
    Budgets,
    KeyBudget,
    KeyHeld,
)
from exporter.client import RateLimitedError, SynthbrewClient
from exporter.config import ApiConfig
from exporter.simulator import Scenario
from tests.runners import Sim

KEY = SecretStr("sb_api_shop")


class VirtualTime:
    """A clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def budget(per_minute: float | None, time: VirtualTime) -> KeyBudget:
    return KeyBudget("shop", per_minute, time.clock, time.sleep)


async def accept(bucket: KeyBudget, times: int, time: VirtualTime, apart: float = 0.0) -> None:
    """``times`` requests through ``bucket`` that the upstream accepts, ``apart`` seconds apart."""
    for _ in range(times):
        await bucket.take()
        bucket.answered(200)
        time.now += apart


async def test_a_budget_never_allows_more_than_its_rate_and_burst_in_any_minute() -> None:
    time = VirtualTime()
    bucket = budget(120, time)
    taken: list[float] = []
    for _ in range(1000):
        await bucket.take()
        bucket.answered(200)
        taken.append(time.now)
    burst = 120 * BURST_SECONDS / 60
    for i, start in enumerate(taken):
        in_a_minute = sum(1 for t in taken[i:] if t < start + 60)
        assert in_a_minute <= 120 + burst
    assert taken[-1] - taken[0] == pytest.approx((1000 - burst) / 2, rel=0.01)
    assert bucket.wait_seconds == pytest.approx(taken[-1] - taken[0], rel=0.01)


async def test_a_429_holds_the_key_for_its_retry_after() -> None:
    time = VirtualTime()
    bucket = budget(None, time)
    await accept(bucket, 10, time)
    bucket.answered(429, retry_after=30)
    held_at = time.now
    await bucket.take()
    assert time.now >= held_at + 30
    bucket.answered(429, retry_after=60)
    with pytest.raises(KeyHeld, match="'shop' is held for 60s"):
        await bucket.take(max_hold=10)
    assert bucket.requests == {"200": 10, "429": 2}


async def test_after_a_429_the_rate_settles_just_under_what_was_accepted() -> None:
    time = VirtualTime()
    bucket = budget(None, time)  # no configured limit: learned from the 429
    await accept(bucket, 50, time, apart=1)  # 50 accepted within the last minute
    bucket.answered(429, retry_after=1)
    assert bucket.ceiling == pytest.approx(50 * MARGIN)
    assert bucket.rate == pytest.approx(50 * MARGIN * DECREASE)
    # Additive increase: back to the ceiling in (1 - DECREASE) / INCREASE minutes, no further
    # (500 requests take about 11 minutes, short of the half hour before a probe).
    await accept(bucket, 500, time)
    assert bucket.rate == pytest.approx(50 * MARGIN)
    start = time.now
    count = 0
    while time.now < start + 60:
        await bucket.take()
        bucket.answered(200)
        count += 1
    assert count <= 50 * MARGIN + 1 + 50 * MARGIN * BURST_SECONDS / 60


async def test_a_learned_ceiling_is_probed_upward_after_a_quiet_half_hour() -> None:
    time = VirtualTime()
    bucket = budget(None, time)
    await accept(bucket, 20, time)
    bucket.answered(429, retry_after=1)
    learned = bucket.ceiling
    assert learned is not None
    time.now += PROBE_AFTER_SECONDS + 1
    await bucket.take()
    assert bucket.ceiling == pytest.approx(learned * PROBE_STEP)


async def test_a_configured_rate_is_never_exceeded_by_probing() -> None:
    time = VirtualTime()
    bucket = budget(10, time)
    bucket.answered(429, retry_after=1)
    assert bucket.ceiling == 1.0  # nothing accepted yet: the floor
    for _ in range(200):
        time.now += PROBE_AFTER_SECONDS + 1
        await bucket.take()
    assert bucket.ceiling == 10


def test_each_project_key_has_its_own_budget_and_the_rest_share_the_default() -> None:
    budgets = Budgets(
        100, "sb_api_default", [("shop", "sb_api_shop", 30), ("lab", "sb_api_default", 5)]
    )
    assert budgets.for_key("sb_api_shop").name == "shop"
    assert budgets.for_key("sb_api_shop").configured == 30
    assert budgets.for_key("sb_api_default").name == "default"  # lab uses the default key
    assert budgets.for_key("sb_api_unknown") is budgets.default
    assert [b.name for b in budgets.all()] == ["default", "shop"]
    assert "sb_api" not in repr(budgets)


def limited_world(start_sim: Callable[..., Sim], speed: float = 1.0) -> Sim:
    """Two projects with keys of their own; ``shop``'s key is limited to 2 requests a minute."""
    scenario = Scenario.model_validate(
        {
            "seed": 3,
            "projects": [
                {
                    "name": "shop",
                    "api_key": "sb_api_shop",
                    "rate_limit_rpm": 2,
                    "sources": [{"name": "orders"}, {"name": "customers"}],
                },
                {"name": "lab", "api_key": "sb_api_lab", "sources": [{"name": "events"}]},
            ],
        }
    )
    sim = start_sim(scenario, now=datetime.now(UTC))
    sim.clock.speed = speed
    sim.clock.resume()
    return sim


async def test_the_simulator_never_sees_more_than_the_budget(
    start_sim: Callable[..., Sim],
) -> None:
    sim = start_sim(
        Scenario.model_validate(
            {"seed": 3, "projects": [{"name": "shop", "sources": [{"name": "a"}, {"name": "b"}]}]}
        )
    )
    api = ApiConfig.model_validate({"base_url": sim.base_url, "requests_per_minute": 240})
    rate, burst = 240 / 60, 240 * BURST_SECONDS / 60
    async with SynthbrewClient(api, budgets=Budgets(240)) as client:
        await asyncio.gather(
            *(
                client.list_generation_events(*sim.ids("shop", name), api_key=KEY, limit=1)
                for name in ("a", "b")
                for _ in range(20)
            )
        )
    arrivals = [t for t, _ in sim.world.requests["shop"]]
    assert len(arrivals) == 40
    # A token bucket's promise: over any stretch, at most its burst plus its rate times the
    # stretch (one request of slack for the clock's resolution).
    for i, first in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            assert j - i + 1 <= burst + rate * (arrivals[j] - first) + 1


async def test_a_429_holds_every_source_of_the_key_and_no_other_key(
    start_sim: Callable[..., Sim],
) -> None:
    # The simulator's clock runs 60 times faster: its minute-long window is a second of ours,
    # so the Retry-After it sends is a second, and the budget counts over that window.
    sim = limited_world(start_sim, speed=60)
    config = {"base_url": sim.base_url, "retry": {"attempts": 3, "max_retry_after_seconds": 5}}
    api = ApiConfig.model_validate(config)
    keys = [("shop", "sb_api_shop", None), ("lab", "sb_api_lab", None)]
    budgets = Budgets(None, None, keys, window=1.0)
    shop, lab = SecretStr("sb_api_shop"), SecretStr("sb_api_lab")
    async with SynthbrewClient(api, budgets=budgets) as client:

        async def poll(project: str, source: str, key: SecretStr, times: int) -> None:
            for _ in range(times):
                await client.list_generation_events(*sim.ids(project, source), api_key=key)

        async def lab_until(done: asyncio.Future[object]) -> None:
            while not done.done():
                await poll("lab", "events", lab, 1)
                await asyncio.sleep(0.05)

        shop_polls = asyncio.gather(
            poll("shop", "orders", shop, 3), poll("shop", "customers", shop, 3)
        )
        await asyncio.gather(shop_polls, lab_until(shop_polls))
    shop_log = sim.world.requests["shop"]
    limited = [t for t, status in shop_log if status == 429]
    assert limited, "the key's limit was reached"
    held = budgets.for_key("sb_api_shop")
    assert held.held_since is not None
    # Every request of that key, from either source, that reached the simulator after the
    # client had the (last) 429 came after its Retry-After (a second) had passed.
    after = [t for t, _ in shop_log if t > held.held_since]
    assert after
    assert min(after) >= held.hold_until
    assert held.hold_until - held.held_since == 1.0
    first_429 = limited[0]
    assert sum(1 for _, status in shop_log if status == 200) == 6  # every poll got through
    lab_during_hold = [t for t, _ in sim.world.requests["lab"] if first_429 < t < first_429 + 1]
    assert lab_during_hold, "the other key went on during the hold"
    assert budgets.for_key("sb_api_shop").requests["429"] == len(limited)
    assert "429" not in budgets.for_key("sb_api_lab").requests


async def test_a_hold_longer_than_allowed_fails_polls_without_sending(
    start_sim: Callable[..., Sim],
) -> None:
    sim = limited_world(start_sim)  # real speed: Retry-After is tens of seconds
    api = ApiConfig.model_validate(
        {"base_url": sim.base_url, "retry": {"attempts": 2, "max_retry_after_seconds": 5}}
    )
    budgets = Budgets(None, None, [("shop", "sb_api_shop", None)])
    async with SynthbrewClient(api, budgets=budgets) as client:
        ids = sim.ids("shop", "orders")
        for _ in range(2):
            await client.list_generation_events(*ids, api_key=KEY)
        with pytest.raises(RateLimitedError):
            await client.list_generation_events(*ids, api_key=KEY)  # the 429
        sent = len(sim.world.requests["shop"])
        with pytest.raises(RateLimitedError, match="not sent: API key 'shop' is held"):
            await client.list_generation_events(*sim.ids("shop", "customers"), api_key=KEY)
    assert len(sim.world.requests["shop"]) == sent
