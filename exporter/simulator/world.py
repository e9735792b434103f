"""The simulated Synthbrew backend: deterministic runs that move through their statuses over time.

Scheduled run ``i`` of a source is a pure function of (seed, source, i): when it was queued, how
long it waited and ran, how it ended. Its status at any instant follows from the clock. Nothing is
stored for scheduled runs but bounded caches (specs, and the bodies of runs that can no longer
change), so a source with years of history costs nothing, and ground truth for a test is one
function call. Runs started through the regenerate endpoint are the only state.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from uuid import UUID

from exporter.models import SourceKey
from exporter.simulator.runs import Identity, RunSpec, corrupt, iso, lognormal, make_run, render
from exporter.simulator.scenario import Scenario, SimProject, SimSource, stable_uuid

REQUEST_LOG = 1_000_000
SETTLED_RUNS = 250_000  # runs each cache keeps (specs, bodies): a benchmark's 1,000 sources of 200


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


class SimClock:
    """Wall-clock time that tests can freeze and move; the demo just lets it run.

    ``speed`` runs it faster than the wall clock (a benchmark's simulated hours in minutes).
    """

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._origin = datetime.now(UTC)
        self._frozen: datetime | None = None
        self._offset = timedelta()
        self._lock = threading.Lock()

    def _running(self) -> datetime:
        return self._origin + (datetime.now(UTC) - self._origin) * self.speed

    def now(self) -> datetime:
        with self._lock:
            return self._frozen or self._running() + self._offset

    def set(self, when: datetime) -> None:
        with self._lock:
            self._frozen = when

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def resume(self) -> None:
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - self._running()
            self._frozen = None


@dataclass
class SimSourceState:
    project: SimProject
    source: SimSource
    index: int
    epoch: datetime
    seed: str | None = None
    schema_version_id: UUID | None = None
    generator_config: dict[str, Any] = field(default_factory=dict)
    manual: list[RunSpec] = field(default_factory=list)
    requests: int = 0
    recent: deque[datetime] = field(default_factory=deque)

    @property
    def id(self) -> UUID:
        assert self.source.id is not None
        return self.source.id

    @property
    def period(self) -> timedelta:
        return timedelta(hours=1 / self.source.runs_per_hour)


class World:
    """All sources of a scenario and their runs, as of ``clock.now()``."""

    def __init__(self, scenario: Scenario, clock: SimClock | None = None) -> None:
        self.scenario = scenario
        self.clock = clock or SimClock()
        self.epoch = scenario.resolved_epoch(self.clock.now())
        self.team_id = stable_uuid(scenario.seed, "team")
        self.lock = threading.Lock()
        self.sources: dict[SourceKey, SimSourceState] = {}
        for project in scenario.projects:
            assert project.id is not None
            for source in project.sources:
                assert source.id is not None
                state = SimSourceState(project, source, len(self.sources), self.epoch)
                state.schema_version_id = stable_uuid(scenario.seed, source.id, "schema", 1)
                self.sources[(project.id, source.id)] = state
        self._spec = lru_cache(maxsize=SETTLED_RUNS)(self._scheduled_spec)
        # The bodies of runs that can no longer change, oldest first out.
        self._settled: dict[tuple[UUID, UUID | None], str] = {}
        # Per project (= per API key): when each request arrived (monotonic seconds) and the
        # status it got, so a test or benchmark can count requests per minute and 429s. The
        # newest million only: `simulate` may serve for weeks.
        self.requests: dict[str, deque[tuple[float, int]]] = {
            p.name: deque(maxlen=REQUEST_LOG) for p in self.projects()
        }
        self.key_recent: dict[str, deque[datetime]] = {p.name: deque() for p in self.projects()}
        # When enabled: the simulated time each run was first served finished (the earliest
        # the exporter could know it ended), for a benchmark's finish-to-stored delay.
        self.first_served_finished: dict[UUID, datetime] | None = None

    def projects(self) -> list[SimProject]:
        return self.scenario.projects

    def source(self, project_id: UUID, source_id: UUID) -> SimSourceState | None:
        return self.sources.get((project_id, source_id))

    def _scheduled_spec(self, key: SourceKey, index: int) -> RunSpec:
        state = self.sources[key]
        src = state.source
        rng = random.Random(f"{self.scenario.seed}/{state.id}/{index}")
        period = state.period.total_seconds()
        queued = self.epoch + timedelta(seconds=index * period + rng.uniform(0, period / 2))
        trigger = "regenerate" if rng.random() < src.regenerate_share else "populate"
        return make_run(
            src,
            self.scenario.seed,
            rng,
            run_id=stable_uuid(self.scenario.seed, state.id, "run", index),
            index=index,
            trigger=trigger,
            queued_at=queued,
            wait=lognormal(rng, src.queue_wait_seconds) if src.queue_wait_seconds else 0.0,
            duration=lognormal(rng, src.duration_seconds),
        )

    def runs(self, state: SimSourceState, now: datetime, limit: int | None = None) -> list[RunSpec]:
        """The runs queued by ``now``, newest first; only the newest ``limit`` when given."""
        key = (state.project.id, state.id)
        assert key[0] is not None
        period = state.period.total_seconds()
        elapsed = (now - self.epoch).total_seconds()
        last = math.floor(elapsed / period) if elapsed >= 0 else -1
        scheduled: list[RunSpec] = []
        for index in range(last, -1, -1):
            spec = self._spec(key, index)
            if spec.queued_at > now:
                continue
            scheduled.append(spec)
            if limit is not None and len(scheduled) >= limit:
                break
        manual = [m for m in state.manual if m.queued_at <= now]
        if not manual:
            return scheduled
        merged = sorted(scheduled + manual, key=lambda r: r.queued_at, reverse=True)
        return merged[:limit] if limit is not None else merged

    def event(self, state: SimSourceState, spec: RunSpec, now: datetime) -> dict[str, Any]:
        """The run as the list endpoint shows it at ``now``."""
        identity = Identity(
            state.project.id, state.id, self.team_id, state.schema_version_id, state.source.kind
        )
        return render(spec, now, identity)

    def page(self, state: SimSourceState, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs as the list endpoint shows them now."""
        now = self.clock.now()
        return [self._served(state, spec, now) for spec in self._served_runs(state, now, limit)]

    def page_json(self, state: SimSourceState, limit: int) -> str:
        """``page`` as the endpoint's body. A run that can no longer change is rendered once:
        rendering every run of every page made the simulator, not the exporter, what a
        benchmark of 1,000 sources measured."""
        now = self.clock.now()
        bodies = (self._json(state, spec, now) for spec in self._served_runs(state, now, limit))
        return f"[{','.join(bodies)}]"

    def _served_runs(self, state: SimSourceState, now: datetime, limit: int) -> list[RunSpec]:
        specs = self.runs(state, now, limit)
        seen = self.first_served_finished
        if seen is not None:
            with self.lock:
                for spec in specs:
                    if spec.id not in seen and spec.finished_at <= now:
                        seen[spec.id] = now
        return specs

    def _json(self, state: SimSourceState, spec: RunSpec, now: datetime) -> str:
        if spec.corrupt >= 0 or now < spec.settled_at:
            return _dumps(self._served(state, spec, now))
        key = (spec.id, state.schema_version_id)
        body = self._settled.get(key)
        if body is None:
            if len(self._settled) >= SETTLED_RUNS:
                del self._settled[next(iter(self._settled))]
            body = self._settled[key] = _dumps(self.event(state, spec, now))
        return body

    def _served(self, state: SimSourceState, spec: RunSpec, now: datetime) -> dict[str, Any]:
        event = self.event(state, spec, now)
        if spec.corrupt >= 0:
            corrupt(event, spec.corrupt)
        return event

    def regenerate(
        self,
        state: SimSourceState,
        *,
        seed_given: bool = False,
        seed: str | None = None,
        schema_version_id: UUID | None = None,
        generator_config: dict[str, Any] | None = None,
    ) -> RunSpec:
        """Start a run now. Inline sources finish it before answering; queue sources enqueue it."""
        now = self.clock.now()
        with self.lock:
            if seed_given:
                state.seed = seed
            if schema_version_id is not None:
                state.schema_version_id = schema_version_id
            if generator_config is not None:
                state.generator_config = generator_config
            number = len(state.manual)
            rng = random.Random(f"{self.scenario.seed}/{state.id}/manual/{number}")
            inline = state.source.execution_mode == "inline"
            spec = make_run(
                state.source,
                self.scenario.seed,
                rng,
                run_id=stable_uuid(self.scenario.seed, state.id, "manual", number),
                index=number,
                trigger="regenerate",
                queued_at=now,
                wait=0.0 if inline else lognormal(rng, state.source.queue_wait_seconds or 1),
                duration=(
                    max(0.001, state.source.inline_duration_seconds)
                    if inline
                    else lognormal(rng, state.source.duration_seconds)
                ),
                job_id=None if inline else f"job-{state.index}-{number}",
            )
            spec = RunSpec(**{**spec.__dict__, "slug": f"{state.source.name}-manual-{number}"})
            state.manual.append(spec)
            return spec

    def source_object(self, state: SimSourceState) -> dict[str, Any]:
        src = state.source
        runs = self.runs(state, self.clock.now(), 1)
        return {
            "id": str(state.id),
            "slug": src.name,
            "name": src.name,
            "description": f"Synthetic {src.name} data",
            "schemaVersionId": str(state.schema_version_id),
            "config": {"table": src.name},
            "kind": src.kind,
            "seed": state.seed,
            "generatorConfig": state.generator_config,
            "rateLimitRpm": src.rate_limit_rpm,
            "requireAuth": True,
            "lastGenerationAt": iso(runs[0].queued_at) if runs else None,
            "generationAudit": {},
            "createdAt": iso(self.epoch),
            "updatedAt": iso(self.clock.now()),
        }
