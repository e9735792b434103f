"""Finding the run a regeneration started, and following it, against the simulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from pydantic import SecretStr

from exporter.client import SynthbrewClient
from exporter.config import ApiConfig
from exporter.models import GenerationEvent, RegenerateRequest, RegenerateResponse
from exporter.regenerate import find_run, regenerate
from tests.factories import API_KEY, make_scenario, run
from tests.runners import Sim

SOURCE = {"id": str(uuid4()), "name": "orders"}


def response(**fields: Any) -> RegenerateResponse:
    return RegenerateResponse.model_validate({"source": SOURCE, **fields})


def regen(**fields: Any) -> GenerationEvent:
    return run(trigger="regenerate", status="queued", finishedAt=None, **fields)


def test_inline_generation_id_wins() -> None:
    mine = regen()
    other = regen()
    answer = response(generation={"id": str(mine.id)})
    assert find_run(answer, [other, mine], set()) == mine


def test_queue_job_id_is_matched_in_metadata() -> None:
    mine = regen(metadata={"queueJobId": "job-7"})
    newer = regen(metadata={"queueJobId": "job-8"}, createdAt="2026-11-01T13:00:00Z")
    answer = response(generationJob={"id": "job-7"})
    assert find_run(answer, [newer, mine], set()) == mine


def test_job_result_event_id_is_matched() -> None:
    mine = regen()
    answer = response(generationJob={"id": "job-1", "result": {"generationEventId": str(mine.id)}})
    assert find_run(answer, [regen(), mine], set()) == mine
    assert find_run(answer, [regen()], set()) is None, "named run not listed yet: keep waiting"


def test_fallback_is_the_first_new_regenerate_event() -> None:
    old = regen(createdAt="2026-11-01T11:00:00Z")
    populate = run(trigger="populate", status="queued", finishedAt=None)
    first = regen(createdAt="2026-11-01T12:00:01Z")
    second = regen(createdAt="2026-11-01T12:00:05Z")
    answer = response(generationJob={"id": "job-unknown"})
    assert find_run(answer, [second, first, populate, old], {old.id}) == first
    assert find_run(answer, [old], {old.id}) is None


async def follow(sim: Sim, source: str, **kwargs: Any) -> Any:
    project_id, source_id = sim.ids("shop", source)
    config = ApiConfig(base_url=sim.base_url)
    async with SynthbrewClient(config) as client:
        return await regenerate(
            client,
            project_id,
            source_id,
            SecretStr(API_KEY),
            RegenerateRequest(),
            poll_seconds=0.1,
            **kwargs,
        )


@pytest.mark.parametrize(("failure_rate", "status"), [(0.0, "success"), (1.0, "failed")])
async def test_queue_mode_is_followed_to_the_end(
    start_sim: Callable[..., Sim], failure_rate: float, status: str
) -> None:
    sim = start_sim(
        make_scenario(
            [
                {
                    "name": "busy",
                    "runs_per_hour": 3600,
                    "queue_wait_seconds": 0.2,
                    "duration_seconds": 0.3,
                    "failure_rate": failure_rate,
                    "regenerate_share": 1.0,
                }
            ]
        )
    )
    sim.clock.resume()
    followed = await follow(sim, "busy", wait=True, give_up_after=30)
    state = sim.state("shop", "busy")
    assert followed.run is not None
    assert followed.run.id == state.manual[-1].id, "our run, not a scheduled one"
    assert followed.run.status == status
    assert followed.failed == (status == "failed")
    assert not followed.timed_out


async def test_inline_mode_needs_no_polling(start_sim: Callable[..., Sim]) -> None:
    sim = start_sim(make_scenario([{"name": "fast", "execution_mode": "inline"}]))
    sim.clock.resume()
    followed = await follow(sim, "fast", wait=True, give_up_after=30)
    assert followed.response.mode == "inline"
    assert followed.run is not None
    assert followed.run.is_finished


async def test_timeout(start_sim: Callable[..., Sim]) -> None:
    sim = start_sim(make_scenario([{"name": "slow", "duration_seconds": 3600}]))
    followed = await follow(sim, "slow", wait=True, give_up_after=0.5)
    assert followed.timed_out
    assert followed.run is not None
    assert followed.run.status == "queued"
