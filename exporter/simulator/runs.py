"""One simulated run: what it is (a pure function of the scenario's seed, its source and its
number), and how the list endpoint shows it at any instant.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from exporter.simulator.scenario import SimSource

ERRORS = (
    "target database rejected the connection",
    "schema version no longer matches the target table",
    "generator timed out after 3 retries",
    "foreign key constraint violated on insert",
)


@dataclass(frozen=True)
class Attempt:
    """A failed run queued again under the same id, as a retried queue job is."""

    requeued_at: datetime
    started_at: datetime
    finished_at: datetime
    final_status: str
    rows: int
    error_message: str | None


@dataclass(frozen=True)
class Correction:
    """The billable rows of a finished, successful run set again later (a billing fix)."""

    at: datetime
    billable_rows: int


@dataclass(frozen=True)
class RunSpec:
    """Everything about one run that does not depend on when you look at it."""

    id: UUID
    index: int
    slug: str
    trigger: str
    queued_at: datetime
    started_at: datetime
    finished_at: datetime
    final_status: str
    rows: int
    error_message: str | None
    mode: str
    job_id: str | None = None
    corrupt: int = -1
    retry: Attempt | None = None
    correction: Correction | None = None

    @property
    def settled_at(self) -> datetime:
        """From this instant on, the list endpoint shows the run the same at any time."""
        ends = [self.finished_at]
        if self.retry is not None:
            ends.append(self.retry.finished_at)
        if self.correction is not None:
            ends.append(self.correction.at)
        return max(ends)

    def status_at(self, now: datetime) -> str:
        if self.retry is not None and now >= self.retry.requeued_at:
            attempt = self.retry
            if now < attempt.started_at:
                return "queued"
            return "active" if now < attempt.finished_at else attempt.final_status
        if now < self.started_at:
            return "queued"
        if now < self.finished_at:
            return "active"
        return self.final_status


@dataclass(frozen=True)
class Identity:
    """Who a run belongs to, as its events name it."""

    project_id: UUID | None
    source_id: UUID
    team_id: UUID
    schema_version_id: UUID | None
    kind: str


def lognormal(rng: random.Random, median: float, sigma: float = 0.6) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def make_run(
    src: SimSource,
    seed: int,
    rng: random.Random,
    *,
    run_id: UUID,
    index: int,
    trigger: str,
    queued_at: datetime,
    wait: float,
    duration: float,
    job_id: str | None = None,
) -> RunSpec:
    """Run ``index`` of a source: how it waits, runs and ends, and what happens to it later.
    One function because every draw comes from ``rng`` in a fixed order: splitting it would
    make that order, which fixes every seeded scenario's runs, easy to break."""
    started = queued_at + timedelta(seconds=wait)
    # Whole milliseconds keep finishedAt - startedAt exactly equal to durationMs.
    finished = started + timedelta(milliseconds=max(1, round(duration * 1000)))
    roll = rng.random()
    if roll < src.failure_rate:
        final, error = "failed", rng.choice(ERRORS)
    elif roll < src.failure_rate + src.unknown_status_rate:
        final, error = "cancelled", None
    else:
        final, error = "success", None
    corrupt = -1
    if src.faults.invalid_event_rate and rng.random() < src.faults.invalid_event_rate:
        corrupt = rng.randrange(4)
    rows = max(1, round(lognormal(rng, src.rows_median, 0.8)))
    # Its own generator, so scenarios without retries or corrections serve what they did.
    later = random.Random(f"{seed}/{run_id}/later")
    retry = None
    if final == "failed" and src.retry_rate and later.random() < src.retry_rate:
        requeued = finished + timedelta(seconds=lognormal(later, src.retry_delay_seconds))
        started_again = requeued + timedelta(seconds=wait)
        again = started_again + timedelta(
            milliseconds=max(1, round(lognormal(later, src.duration_seconds) * 1000))
        )
        failed_again = later.random() < src.failure_rate
        retry = Attempt(
            requeued_at=requeued,
            started_at=started_again,
            finished_at=again,
            final_status="failed" if failed_again else "success",
            rows=max(1, round(lognormal(later, src.rows_median, 0.8))),
            error_message=later.choice(ERRORS) if failed_again else None,
        )
    last_status = retry.final_status if retry else final
    correction = None
    if last_status == "success" and src.correction_rate and later.random() < src.correction_rate:
        last_finish = retry.finished_at if retry else finished
        last_rows = retry.rows if retry else rows
        correction = Correction(
            at=last_finish + timedelta(seconds=lognormal(later, src.correction_delay_seconds)),
            billable_rows=round(last_rows * later.uniform(0.5, 0.95)),
        )
    return RunSpec(
        id=run_id,
        index=index,
        slug=f"{src.name}-{index}",
        trigger=trigger,
        queued_at=queued_at,
        started_at=started,
        finished_at=finished,
        final_status=final,
        rows=rows,
        error_message=error,
        mode=src.execution_mode,
        job_id=job_id,
        corrupt=corrupt,
        retry=retry,
        correction=correction,
    )


def render(spec: RunSpec, now: datetime, source: Identity) -> dict[str, Any]:
    """The run as the list endpoint shows it at ``now``."""
    status = spec.status_at(now)
    finished = status not in ("queued", "active")
    retried = spec.retry is not None and now >= spec.retry.requeued_at
    attempt = spec.retry if retried and spec.retry else spec
    queued = spec.retry.requeued_at if retried and spec.retry else spec.queued_at
    if status == "queued":
        updated, inserted = queued, 0
    elif status == "active":
        progress = (now - attempt.started_at) / (attempt.finished_at - attempt.started_at)
        updated, inserted = attempt.started_at, int(attempt.rows * progress)
    else:
        updated = attempt.finished_at
        inserted = attempt.rows if status == "success" else attempt.rows // 3
    billable = inserted if finished and status == "success" else 0
    if finished and spec.correction is not None and now >= spec.correction.at:
        updated, billable = spec.correction.at, spec.correction.billable_rows
    duration_ms = (attempt.finished_at - attempt.started_at) // timedelta(milliseconds=1)
    metadata: dict[str, Any] = {
        "mode": spec.mode,
        "targetProvider": source.kind,
        "targetSchema": "public",
    }
    if spec.job_id:
        metadata["queueJobId"] = spec.job_id
    event: dict[str, Any] = {
        "id": str(spec.id),
        "slug": spec.slug,
        "sourceId": str(source.source_id),
        "projectId": str(source.project_id),
        "teamId": str(source.team_id),
        "schemaVersionId": str(source.schema_version_id),
        "trigger": spec.trigger,
        "status": status,
        "queuedAt": iso(spec.queued_at),
        "startedAt": iso(attempt.started_at) if status != "queued" else None,
        "finishedAt": iso(attempt.finished_at) if finished else None,
        "durationMs": duration_ms if finished else None,
        "totalInsertedRows": inserted,
        "billableRows": billable,
        "errorMessage": attempt.error_message if status == "failed" else None,
        "metadata": metadata,
        "createdAt": iso(spec.queued_at),
        "updatedAt": iso(updated),
        "workerRegion": "eu-central-1",
    }
    return event


def corrupt(event: dict[str, Any], how: int) -> None:
    """Break one event in one of the ways a buggy upstream might."""
    if how == 0:
        event["queuedAt"] = "yesterday"
    elif how == 1:
        event["billableRows"] = -5
    elif how == 2:
        del event["status"]
    else:
        event["id"] = "not-a-uuid"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
