"""The simulator's HTTP face: both public endpoints, faults, and a small control API for tests.

Checks run in the order a real API gateway applies them: key, resource, parameters, rate limit,
then the source's injected faults. ``/_sim/...`` is not part of Synthbrew; it lets tests freeze
and move the clock and read ground truth.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exporter.models import RegenerateRequest
from exporter.simulator.scenario import Faults
from exporter.simulator.world import SimSourceState, World

API = "/api/public/v1/projects/{project_id}/sources/{source_id}"
KEY_PREFIX = "sb_api_"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _sliding_minute(recent: deque[datetime], rpm: int, now: datetime) -> float | None:
    """Count the request in a sliding one-minute window of ``rpm``; if it is over, the
    (simulated) seconds until the window has room, and the request is not counted."""
    window = timedelta(minutes=1)
    while recent and recent[0] <= now - window:
        recent.popleft()
    if len(recent) >= rpm:
        return (recent[0] + window - now).total_seconds()
    recent.append(now)
    return None


class SimulatorApp:
    def __init__(self, world: World) -> None:
        self.world = world
        # Requests being answered right now, and the most ever at once: lets a test see how
        # many requests a client really had in flight, without timing anything.
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = Starlette(
            routes=[
                Route(f"{API}/generation-events", self.list_events, methods=["GET"]),
                Route(f"{API}/regenerate", self.regenerate, methods=["POST"]),
                Route("/_sim/clock", self.clock, methods=["GET", "POST"]),
                Route("/_sim/scenario", self.scenario, methods=["GET"]),
                Route(f"/_sim/truth{API.removeprefix('/api/public/v1')}", self.truth),
                Route(
                    f"/_sim/faults{API.removeprefix('/api/public/v1')}",
                    self.faults,
                    methods=["PUT"],
                ),
            ]
        )

    async def _gate(self, request: Request) -> SimSourceState | Response:
        """Auth, lookup, rate limit and faults: everything that can refuse a request."""
        key = request.headers.get("x-api-key", "")
        if not key.startswith(KEY_PREFIX):
            return _error(401, "missing or invalid x-api-key")
        try:
            project_id = UUID(request.path_params["project_id"])
            source_id = UUID(request.path_params["source_id"])
        except ValueError:
            return _error(404, "not found")
        state = self.world.source(project_id, source_id)
        if state is None:
            return _error(404, "project or source not found")
        if state.project.api_key is not None and key != state.project.api_key:
            return _error(403, "this API key has no access to the project")
        faults = state.source.faults
        now = self.world.clock.now()
        arrived = time.monotonic()
        with self.world.lock:
            state.requests += 1
            rng = random.Random(f"{self.world.scenario.seed}/{state.id}/request/{state.requests}")
            limited = self._key_limited(state, now) or self._rate_limited(state, now)
        answer = await self._answer(state, faults, limited, rng)
        self.world.requests[state.project.name].append(
            (arrived, answer.status_code if isinstance(answer, Response) else 200)
        )
        return answer

    async def _answer(
        self, state: SimSourceState, faults: Faults, limited: float | None, rng: random.Random
    ) -> SimSourceState | Response:
        if faults.hang_seconds:
            await asyncio.sleep(faults.hang_seconds)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.status is not None:
            return _error(faults.status, f"injected HTTP {faults.status}")
        if limited is not None:
            # Whole real seconds: a client waits on its own clock, which a sped-up one outruns.
            wait = max(1, math.ceil(limited / self.world.clock.speed))
            headers = {"retry-after": str(wait)} if faults.retry_after_header else None
            return _error(429, "rate limit exceeded", headers)
        if faults.error_rate and rng.random() < faults.error_rate:
            return _error(503, "injected upstream error")
        return state

    def _key_limited(self, state: SimSourceState, now: datetime) -> float | None:
        """The project key's ``rate_limit_rpm``, over all its sources: a real API limits the
        key, whichever resource it asks for."""
        rpm = state.project.rate_limit_rpm
        if rpm is None:
            return None
        return _sliding_minute(self.world.key_recent[state.project.name], rpm, now)

    def _rate_limited(self, state: SimSourceState, now: datetime) -> float | None:
        """The source's own ``rate_limit_rpm``."""
        rpm = state.source.rate_limit_rpm
        if rpm is None:
            return None
        return _sliding_minute(state.recent, rpm, now)

    async def list_events(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._list_events(request)
        finally:
            self.in_flight -= 1

    async def _list_events(self, request: Request) -> Response:
        raw = request.query_params.get("limit", "50")
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 200:
            return _error(422, "limit must be an integer between 1 and 200")
        faults = gate.source.faults
        rng = random.Random(f"{self.world.scenario.seed}/{gate.id}/body/{gate.requests}")
        if faults.malformed_rate and rng.random() < faults.malformed_rate:
            return Response('[{"id": "', media_type="application/json")
        return Response(self.world.page_json(gate, limit), media_type="application/json")

    async def regenerate(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        raw = await request.body()
        try:
            body = RegenerateRequest.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            return _error(400, f"invalid body: {exc.errors(include_url=False)[0]['msg']}")
        spec = self.world.regenerate(
            gate,
            seed_given="seed" in body.model_fields_set,
            seed=body.seed,
            schema_version_id=body.schema_version_id,
            generator_config=body.generator_config,
        )
        answer: dict[str, Any] = {"source": self.world.source_object(gate)}
        if spec.job_id is None:
            await asyncio.sleep((spec.finished_at - spec.started_at).total_seconds())
            answer["generation"] = self.world.event(gate, spec, spec.finished_at)
        else:
            answer["generationJob"] = {
                "id": spec.job_id,
                "status": "waiting",
                "queueName": "synthbrew-generation",
                "attemptsMade": 0,
                "finishedOn": None,
                "failedReason": None,
                "result": {"generationEventId": str(spec.id)},
            }
        return JSONResponse(answer, status_code=202 if spec.job_id else 200)

    async def clock(self, request: Request) -> Response:
        if request.method == "POST":
            command = await request.json()
            if "set" in command:
                self.world.clock.set(datetime.fromisoformat(command["set"]))
            if "advance" in command:
                self.world.clock.advance(float(command["advance"]))
            if command.get("resume"):
                self.world.clock.resume()
        return JSONResponse({"now": self.world.clock.now().isoformat()})

    async def scenario(self, request: Request) -> Response:
        return JSONResponse(
            {
                "epoch": self.world.epoch.isoformat(),
                "scenario": self.world.scenario.model_dump(mode="json"),
            }
        )

    async def faults(self, request: Request) -> Response:
        """Replace a source's faults (and rate limit) while running: faults come and go."""
        state = self._state_of(request)
        if state is None:
            return _error(404, "project or source not found")
        body = await request.json()
        try:
            faults = Faults.model_validate(body.get("faults", {}))
        except ValidationError as exc:
            return _error(400, str(exc))
        with self.world.lock:
            state.source.faults = faults
            state.source.rate_limit_rpm = body.get("rate_limit_rpm")
            state.recent.clear()
        return JSONResponse(faults.model_dump())

    def _state_of(self, request: Request) -> SimSourceState | None:
        try:
            key = (UUID(request.path_params["project_id"]), UUID(request.path_params["source_id"]))
        except ValueError:
            return None
        return self.world.sources.get(key)

    async def truth(self, request: Request) -> Response:
        """Every run queued so far, unwindowed and uncorrupted: what the exporter should know."""
        state = self._state_of(request)
        if state is None:
            return _error(404, "project or source not found")
        now = self.world.clock.now()
        return JSONResponse([self.world.event(state, s, now) for s in self.world.runs(state, now)])
