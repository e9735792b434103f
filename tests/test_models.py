from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.models import (
    GenerationEvent,
    PageFormatError,
    RegenerateRequest,
    RegenerateResponse,
    parse_event_page,
)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": str(uuid4()),
        "slug": "orders-1",
        "sourceId": str(uuid4()),
        "projectId": str(uuid4()),
        "teamId": str(uuid4()),
        "schemaVersionId": str(uuid4()),
        "trigger": "populate",
        "status": "success",
        "queuedAt": "2023-11-07T05:31:56Z",
        "startedAt": "2023-11-07T05:31:57.250Z",
        "finishedAt": "2023-11-07T07:31:58.5+02:00",
        "durationMs": 1250,
        "totalInsertedRows": 100,
        "billableRows": 90,
        "errorMessage": None,
        "metadata": {"mode": "queue"},
        "createdAt": "2023-11-07T05:31:56Z",
        "updatedAt": "2023-11-07T05:31:58Z",
    }
    base.update(overrides)
    return base


def test_page_parses_offsets_and_fractional_seconds() -> None:
    page = parse_event_page(json.dumps([event()]))
    [ev] = page.events
    assert ev.queued_at == datetime(2023, 11, 7, 5, 31, 56, tzinfo=UTC)
    assert ev.started_at == datetime(2023, 11, 7, 5, 31, 57, 250000, tzinfo=UTC)
    assert ev.finished_at is not None
    assert ev.finished_at.utcoffset() == timedelta(hours=2)
    assert ev.finished_at == datetime(2023, 11, 7, 5, 31, 58, 500000, tzinfo=UTC)
    assert ev.billable_rows == 90
    assert page.invalid == []


def test_nullable_fields_and_unknown_fields_are_kept() -> None:
    raw = event(
        status="queued", startedAt=None, finishedAt=None, durationMs=None, updatedAt=None, zone="eu"
    )
    [ev] = parse_event_page(json.dumps([raw])).events
    assert ev.started_at is None
    assert ev.duration_ms is None
    assert ev.updated_at is None
    assert ev.extra_fields == {"zone": "eu"}
    assert not ev.is_finished


def test_unknown_status_is_kept_and_finished_by_finished_at() -> None:
    [ev] = parse_event_page(json.dumps([event(status="cancelled")])).events
    assert ev.status == "cancelled"
    assert ev.is_finished
    [ev] = parse_event_page(json.dumps([event(status="paused", finishedAt=None)])).events
    assert not ev.is_finished


def test_naive_datetime_is_rejected() -> None:
    page = parse_event_page(json.dumps([event(queuedAt="2023-11-07T05:31:56")]))
    assert page.events == []
    assert "queuedAt" in page.invalid[0].error


def test_one_bad_event_costs_only_itself() -> None:
    good = [event(), event()]
    bad = event(billableRows=-1)
    page = parse_event_page(json.dumps([good[0], bad, good[1], "junk"]))
    assert [str(e.id) for e in page.events] == [good[0]["id"], good[1]["id"]]
    assert [i.index for i in page.invalid] == [1, 3]
    assert page.invalid[0].event_id == bad["id"]
    assert "billableRows" in page.invalid[0].error
    assert page.raw_count == 4


@pytest.mark.parametrize("body", ["{}", '{"events": []}', "[{", "", "null"])
def test_a_body_that_is_not_an_array_is_a_format_error(body: str) -> None:
    with pytest.raises(PageFormatError):
        parse_event_page(body)


def test_empty_page_is_fine() -> None:
    page = parse_event_page("[]")
    assert page.events == []
    assert page.invalid == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_json_never_crashes_the_parser(value: Any) -> None:
    try:
        page = parse_event_page(json.dumps(value))
    except PageFormatError:
        assert not isinstance(value, list)
        return
    assert isinstance(value, list)
    assert len(page.events) + len(page.invalid) == len(value)


@given(st.sampled_from(sorted(event().keys())), json_values)
def test_any_field_value_is_either_accepted_or_reported(key: str, value: Any) -> None:
    page = parse_event_page(json.dumps([event(**{key: value})]))
    assert len(page.events) + len(page.invalid) == 1
    if page.invalid:
        assert page.invalid[0].error


def test_regenerate_body_sends_only_what_was_set() -> None:
    assert RegenerateRequest().to_body() == {}
    assert RegenerateRequest(seed=None).to_body() == {"seed": None}
    schema = uuid4()
    body = RegenerateRequest(schema_version_id=schema, seed="s1", generator_config={"rows": 5})
    assert body.to_body() == {
        "schemaVersionId": str(schema),
        "seed": "s1",
        "generatorConfig": {"rows": 5},
    }


def test_regenerate_response_modes() -> None:
    source = {"id": str(uuid4()), "name": "orders", "rateLimitRpm": 60, "kind": "postgres"}
    queued = RegenerateResponse.model_validate(
        {"source": source, "generationJob": {"id": "job-1", "status": "waiting", "x": 1}}
    )
    assert queued.mode == "queue"
    assert queued.generation_job is not None
    assert queued.generation_job.id == "job-1"
    assert queued.source.rate_limit_rpm == 60
    inline = RegenerateResponse.model_validate({"source": source, "generation": event()})
    assert inline.mode == "inline"


def test_event_round_trips_by_alias() -> None:
    ev = GenerationEvent.model_validate(event())
    again = GenerationEvent.model_validate_json(ev.model_dump_json(by_alias=True))
    assert again == ev
    assert again.finished_at is not None
    assert again.finished_at.tzinfo is not None
    assert again.finished_at.astimezone(UTC) == ev.finished_at
