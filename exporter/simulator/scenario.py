"""What the simulator simulates: projects, sources, their run cadence and their faults.

A scenario plus a clock fully determines every event the simulator will ever serve, which is what
lets tests compute ground truth independently of the exporter.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

NAMESPACE = uuid.UUID("6f1c3f43-2d5e-4c8e-9a51-5f5b7d6c1e00")


def stable_uuid(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Faults(Strict):
    """Per-source misbehaviour. Rates are probabilities per request (or per event)."""

    error_rate: float = Field(0.0, ge=0, le=1, description="answer 503 instead of the page")
    latency_ms: int = Field(0, ge=0, description="added to every answer")
    hang_seconds: float = Field(0.0, ge=0, description="wait this long before answering")
    malformed_rate: float = Field(0.0, ge=0, le=1, description="answer a truncated JSON body")
    invalid_event_rate: float = Field(0.0, ge=0, le=1, description="events that break the schema")
    status: int | None = Field(None, ge=400, le=599, description="always answer this status")
    retry_after_header: bool = Field(True, description="send Retry-After with 429")


class SimSource(Strict):
    name: str
    id: uuid.UUID | None = None
    kind: str = "postgres"
    runs_per_hour: float = Field(30.0, gt=0, le=360_000)
    failure_rate: float = Field(0.1, ge=0, le=1)
    unknown_status_rate: float = Field(0.0, ge=0, le=1, description="runs that end 'cancelled'")
    regenerate_share: float = Field(0.2, ge=0, le=1)
    queue_wait_seconds: float = Field(5.0, ge=0, description="median queue wait")
    duration_seconds: float = Field(60.0, gt=0, description="median run duration")
    rows_median: int = Field(50_000, ge=1)
    inline_duration_seconds: float = Field(0.05, ge=0, le=30)
    execution_mode: Literal["inline", "queue"] = "queue"
    rate_limit_rpm: int | None = Field(None, ge=1)
    retry_rate: float = Field(
        0.0, ge=0, le=1, description="failed runs queued again under the same id (a retried job)"
    )
    retry_delay_seconds: float = Field(60.0, gt=0, description="median wait before a retry")
    correction_rate: float = Field(
        0.0, ge=0, le=1, description="successful runs whose billable rows are corrected later"
    )
    correction_delay_seconds: float = Field(300.0, gt=0, description="median wait for it")
    faults: Faults = Faults()


class SimProject(Strict):
    name: str
    id: uuid.UUID | None = None
    api_key: str | None = Field(None, description="only this key is accepted; default: any sb_api_")
    rate_limit_rpm: int | None = Field(
        None, ge=1, description="requests a minute the project's key may make, all sources together"
    )
    sources: list[SimSource]


class Scenario(Strict):
    seed: int = 42
    epoch: datetime | None = Field(None, description="when the first run was queued")
    history_hours: float = Field(6.0, ge=0, description="epoch = start - history, if unset")
    projects: list[SimProject]

    @model_validator(mode="after")
    def _fill_ids(self) -> Self:
        for project in self.projects:
            project.id = project.id or stable_uuid(self.seed, "project", project.name)
            for source in project.sources:
                source.id = source.id or stable_uuid(self.seed, project.id, "source", source.name)
        return self

    def resolved_epoch(self, now: datetime) -> datetime:
        if self.epoch is not None:
            return self.epoch if self.epoch.tzinfo else self.epoch.replace(tzinfo=UTC)
        return (now - timedelta(hours=self.history_hours)).replace(second=0, microsecond=0)

    @classmethod
    def load(cls, path: Path) -> Scenario:
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def demo_scenario(seed: int = 42) -> Scenario:
    """Two projects, six sources, a little of every fault: enough to make every panel move."""
    return Scenario.model_validate(
        {
            "seed": seed,
            "projects": [
                {
                    "name": "shop",
                    "sources": [
                        {"name": "orders", "runs_per_hour": 40, "duration_seconds": 45},
                        {"name": "customers", "runs_per_hour": 12, "execution_mode": "inline"},
                        {
                            "name": "inventory",
                            "runs_per_hour": 20,
                            "rate_limit_rpm": 30,
                            "failure_rate": 0.25,
                        },
                    ],
                },
                {
                    "name": "analytics",
                    "sources": [
                        {"name": "events", "runs_per_hour": 60, "duration_seconds": 20},
                        {"name": "sessions", "runs_per_hour": 10, "faults": {"error_rate": 0.1}},
                        {
                            "name": "warehouse",
                            "runs_per_hour": 6,
                            "duration_seconds": 600,
                            "faults": {"invalid_event_rate": 0.02},
                        },
                    ],
                },
            ],
        }
    )
