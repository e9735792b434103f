"""Trigger a regeneration and follow the new run to its end through the events endpoint.

The list endpoint has no filter and no cursor, so "the newest event" is not good enough to find
the run we started: another run may be queued in the same second. The run is identified, in this
order, by the inline generation's id, by the queue job id the response names (matched against
``metadata`` and ``generationJob.result``), and last by being a ``regenerate`` event that was not
in the window before our request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import SecretStr, ValidationError

from exporter.client import SynthbrewClient
from exporter.models import GenerationEvent, RegenerateRequest, RegenerateResponse

JOB_ID_KEYS = ("queueJobId", "jobId", "generationJobId")


@dataclass
class Followed:
    """What ``regenerate`` learned: the response, and the run once found (final if waited)."""

    response: RegenerateResponse
    run: GenerationEvent | None = None
    timed_out: bool = False

    @property
    def failed(self) -> bool:
        return self.run is not None and self.run.status != "success" and self.run.is_finished


def inline_run(response: RegenerateResponse) -> GenerationEvent | None:
    if not response.generation:
        return None
    try:
        return GenerationEvent.model_validate(response.generation)
    except ValidationError:
        return None


def _job_ids(response: RegenerateResponse) -> tuple[str | None, str | None]:
    """(queue job id, event id the job result names, if any)."""
    job = response.generation_job
    if job is None:
        return None, None
    result = job.result or {}
    event_id = result.get("generationEventId") or result.get("eventId")
    return job.id, str(event_id) if event_id else None


def find_run(
    response: RegenerateResponse, events: Iterable[GenerationEvent], before: set[UUID]
) -> GenerationEvent | None:
    events = list(events)
    generation = response.generation or {}
    inline_id = generation.get("id") or generation.get("generationEventId")
    job_id, job_event = _job_ids(response)
    event_id = str(inline_id) if inline_id else job_event
    if event_id:
        for e in events:
            if str(e.id) == event_id:
                return e
    if job_id:
        for e in events:
            if any(e.metadata.get(k) == job_id for k in JOB_ID_KEYS):
                return e
    if event_id:
        return None
    fresh = [e for e in events if e.id not in before and e.trigger == "regenerate"]
    return min(fresh, key=lambda e: e.created_at) if fresh else None


async def regenerate(
    client: SynthbrewClient,
    project_id: UUID,
    source_id: UUID,
    api_key: SecretStr,
    request: RegenerateRequest,
    *,
    wait: bool,
    give_up_after: float,
    poll_seconds: float = 2.0,
    on_update: Callable[[GenerationEvent | None, float], object] = lambda *_: None,
) -> Followed:
    before: set[UUID] = set()
    if wait:
        page = await client.list_generation_events(project_id, source_id, api_key=api_key)
        before = {e.id for e in page.events}
    started = time.monotonic()
    response = await client.regenerate(project_id, source_id, api_key=api_key, request=request)
    followed = Followed(response=response, run=inline_run(response))
    if not wait or (followed.run is not None and followed.run.is_finished):
        return followed
    deadline = started + give_up_after
    while True:
        page = await client.list_generation_events(project_id, source_id, api_key=api_key)
        run = find_run(response, page.events, before)
        if run is not None:
            followed.run = run
        on_update(followed.run, time.monotonic() - started)
        if followed.run is not None and followed.run.is_finished:
            return followed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            followed.timed_out = True
            return followed
        await asyncio.sleep(min(poll_seconds, remaining))


def summary(followed: Followed) -> dict[str, Any]:
    """The machine-readable result (``--format json``)."""
    run = followed.run
    return {
        "source": followed.response.source.model_dump(mode="json", by_alias=True),
        "mode": followed.response.mode,
        "generation": followed.response.generation,
        "generationJob": (
            followed.response.generation_job.model_dump(mode="json", by_alias=True)
            if followed.response.generation_job
            else None
        ),
        "run": run.model_dump(mode="json", by_alias=True) if run else None,
        "timedOut": followed.timed_out,
    }
