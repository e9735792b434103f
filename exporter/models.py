"""Typed shapes of the Synthbrew public API, as its two reference pages describe them.

The models accept what the upstream sends today and whatever it adds tomorrow: unknown fields
are kept (``model_extra``) rather than rejected, and ``status``/``trigger`` stay plain strings so a
new status is stored as it comes instead of failing the whole page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

# A source as the API addresses it: (project id, source id).
SourceKey = tuple[UUID, UUID]

FINAL_STATUSES = frozenset({"success", "failed"})
# Still running upstream; any other status without finishedAt is neither finished nor in flight.
IN_FLIGHT_STATUSES = frozenset({"queued", "active"})

# The fields a run changes as it progresses, in the order ``fingerprint`` takes them. The store
# reads the same columns back after a restart, so both sides must agree on this list.
PROGRESS_FIELDS = (
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "total_inserted_rows",
    "billable_rows",
    "error_message",
)


def fingerprint(changed_at_us: int, *progress: object) -> int:
    """What a copy of a run looks like, in one int: equal fingerprints, nothing to write.

    ``changed_at_us`` is ``updatedAt`` (or, without it, ``createdAt``) in microseconds since the
    epoch; ``progress`` follows ``PROGRESS_FIELDS``, datetimes as microseconds too. Plain ints
    and strings, so the store can read them back from DuckDB without building datetimes.
    """
    return hash((changed_at_us, *progress))


def _us(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ApiModel(BaseModel):
    """Base for upstream payloads: camelCase on the wire, extra fields tolerated and kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=True,
    )


class GenerationEvent(ApiModel):
    id: UUID
    slug: str | None = None
    source_id: UUID
    project_id: UUID
    team_id: UUID | None = None
    schema_version_id: UUID | None = None
    trigger: str
    status: str
    queued_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    duration_ms: NonNegativeInt | None = None
    total_inserted_rows: NonNegativeInt = 0
    billable_rows: NonNegativeInt = 0
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None

    @property
    def is_finished(self) -> bool:
        """The contract's definition: a final status, or any status that carries ``finishedAt``."""
        return self.status in FINAL_STATUSES or self.finished_at is not None

    @property
    def fingerprint(self) -> int:
        progress = (getattr(self, f) for f in PROGRESS_FIELDS)
        return fingerprint(
            _us(self.updated_at or self.created_at),
            *(_us(v) if isinstance(v, datetime) else v for v in progress),
        )

    @property
    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Source(ApiModel):
    id: UUID
    slug: str | None = None
    name: str | None = None
    description: str | None = None
    schema_version_id: UUID | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    kind: str | None = None
    seed: str | None = None
    generator_config: dict[str, Any] = Field(default_factory=dict)
    rate_limit_rpm: int | None = None
    require_auth: bool | None = None
    last_generation_at: AwareDatetime | None = None
    generation_audit: dict[str, Any] = Field(default_factory=dict)
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None


class GenerationJob(ApiModel):
    id: str
    status: str | None = None
    queue_name: str | None = None
    attempts_made: int | None = None
    finished_on: AwareDatetime | None = None
    failed_reason: str | None = None
    result: dict[str, Any] | None = None


class RegenerateRequest(ApiModel):
    """Optional overrides. Only fields the caller set are sent: ``seed=None`` set on purpose
    means "clear the stored seed", which is not the same as leaving ``seed`` out."""

    schema_version_id: UUID | None = None
    seed: str | None = None
    generator_config: dict[str, Any] | None = None

    model_config = ConfigDict(extra="forbid")

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class RegenerateResponse(ApiModel):
    source: Source
    generation: dict[str, Any] | None = None
    generation_job: GenerationJob | None = None
    auto_provisioned_api_key: dict[str, Any] | None = None
    auto_provisioned_read_only_db_access: dict[str, Any] | None = None

    @property
    def mode(self) -> str:
        return "queue" if self.generation_job is not None else "inline"


@dataclass(frozen=True)
class InvalidEvent:
    """An element of a page that failed validation: kept for counting and logging, not storing."""

    index: int
    event_id: str | None
    error: str


@dataclass(frozen=True)
class EventPage:
    events: list[GenerationEvent]
    invalid: list[InvalidEvent] = field(default_factory=list)
    raw_count: int = 0


class PageFormatError(ValueError):
    """The body is not a JSON array at all, so no event in it can be trusted."""


_PAGE = TypeAdapter(list[GenerationEvent])
_EVENT = TypeAdapter(GenerationEvent)


def parse_event_page(body: bytes | str) -> EventPage:
    """Validate a whole page in one call; on failure fall back to one event at a time.

    The fast path is the common case and runs entirely in pydantic-core. The slow path exists so
    one corrupt event costs exactly one event, never the page it arrived in.
    """
    try:
        events = _PAGE.validate_json(body)
        return EventPage(events=events, raw_count=len(events))
    except ValidationError:
        pass
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PageFormatError(f"body is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise PageFormatError(f"expected a JSON array of events, got {type(items).__name__}")
    good: list[GenerationEvent] = []
    bad: list[InvalidEvent] = []
    for index, item in enumerate(items):
        try:
            good.append(_EVENT.validate_python(item))
        except ValidationError as exc:
            event_id = item.get("id") if isinstance(item, dict) else None
            bad.append(
                InvalidEvent(
                    index=index,
                    event_id=event_id if isinstance(event_id, str) else None,
                    error=_summarise(exc),
                )
            )
    return EventPage(events=good, invalid=bad, raw_count=len(items))


def _summarise(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )
