"""Writing a batch of polled pages: one transaction, set-based SQL over Arrow, never row by row.

For every run in the batch the stored copy is looked up — in ``events_live`` (indexed), else in
``events_history`` by id and ``queued_at`` (zone maps) — and compared with the page's copy into
the temporary table ``staged``. From it, in the same transaction: the running totals take the
change (``totals.apply_changes``), runs found in history move back to live
(``history.revive``), live is upserted with one ``MERGE``, runs that left a full window
unfinished are flagged stale, and each source's poll is recorded. A crash at any point leaves
the batch either entirely stored or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any
from uuid import UUID

import duckdb
import pyarrow as pa
from pydantic_core import to_json

from exporter.models import PROGRESS_FIELDS, GenerationEvent, SourceKey
from exporter.store import history, totals
from exporter.store.db import registered, scalar, transaction
from exporter.store.schema import HISTORY_BY_TIME, finished, in_flight

# The columns a page carries, in table order, with their Arrow types. UUIDs and JSON travel as
# strings and are cast in SQL: Arrow has no portable UUID type.
PAGE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("project_id", pa.string()),
        ("source_id", pa.string()),
        ("team_id", pa.string()),
        ("schema_version_id", pa.string()),
        ("slug", pa.string()),
        ("trigger", pa.string()),
        ("status", pa.string()),
        ("queued_at", pa.timestamp("us", tz="UTC")),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("duration_ms", pa.int64()),
        ("total_inserted_rows", pa.int64()),
        ("billable_rows", pa.int64()),
        ("error_message", pa.string()),
        ("metadata", pa.string()),
        ("extra", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = PAGE_SCHEMA.names
_CASTS = {
    "id": "UUID",
    "project_id": "UUID",
    "source_id": "UUID",
    "team_id": "UUID",
    "schema_version_id": "UUID",
    "metadata": "JSON",
    "extra": "JSON",
}
_STORED = [*COLUMNS, "first_seen_at", "last_seen_at", "stale_since"]
_SELECT = ", ".join(f"{c}::{_CASTS[c]} AS {c}" if c in _CASTS else c for c in COLUMNS)
# What later statements need of a run's stored copy: its keys and values for the totals, and
# what reviving it takes.
_OLD = [
    "project_id",
    "source_id",
    "trigger",
    "status",
    "queued_at",
    "finished_at",
    "duration_ms",
    "billable_rows",
    "total_inserted_rows",
    "first_seen_at",
    "stale_since",
]
_FLAGS = ["changed", "was_stored", "is_live", "is_finished", "was_finished", "was_in_flight"]

# Two working tables of the writer's connection, emptied at the end of every batch. Created once,
# so every batch runs the same statements against the same catalog.
WORK_TABLES = f"""
CREATE TEMP TABLE page_in AS SELECT {_SELECT} FROM page_schema;
CREATE TEMP TABLE staged AS
SELECT p.*, {", ".join(f"s.{c} AS old_{c}" for c in _OLD)},
       {", ".join(f"false AS {f}" for f in _FLAGS)}
FROM page_in p, events_live s LIMIT 0;
"""
# MERGE may touch a row once, so a batch listing one id twice (a page repeating itself, or two
# pages of the same source) keeps only the newest copy of each id; the window that costs is
# skipped for the usual batch without repeats.
_LOAD = f"INSERT INTO page_in SELECT {_SELECT} FROM page"
_LOAD_DEDUPED = f"""
INSERT INTO page_in SELECT {_SELECT} FROM page
QUALIFY row_number() OVER (
    PARTITION BY id ORDER BY coalesce(updated_at, created_at) DESC, status
) = 1
"""


def _changed(p: str, s: str) -> str:
    """A copy replaces the stored one when it is newer by updatedAt (createdAt without it), or
    equally new with different progress. An older copy never overwrites a newer one."""
    new = f"coalesce({p}updated_at, {p}created_at)"
    old = f"coalesce({s}updated_at, {s}created_at)"
    progress_new, progress_old = (", ".join(f"{x}{c}" for c in PROGRESS_FIELDS) for x in (p, s))
    return (
        f"({new} > {old} OR ({new} = {old} AND ({progress_new}) IS DISTINCT FROM ({progress_old})))"
    )


# Every run of the page that is new, changed, or in flight, with its live copy if any. A run not
# found may still be in history: _FROM_HISTORY looks, only when one could be.
_STAGE = f"""
INSERT INTO staged
SELECT p.*, {", ".join(f"s.{c}" for c in _OLD)},
       s.id IS NULL OR {_changed("p.", "s.")},
       s.id IS NOT NULL,
       s.id IS NOT NULL,
       {finished("p.")},
       coalesce({finished("s.")}, false),
       coalesce({in_flight("s.")}, false)
FROM page_in p LEFT JOIN events_live s ON s.id = p.id
WHERE s.id IS NULL OR {_changed("p.", "s.")} OR {in_flight("s.")}
"""
# By id and queued_at, which a run keeps for life: DuckDB reads only the row groups whose
# queued_at range holds one of the runs looked for, and checks queued_at first.
_FROM_HISTORY = f"""
UPDATE staged SET
    {", ".join(f"old_{c} = h.{c}" for c in _OLD)},
    changed = {_changed("staged.", "h.")},
    was_stored = true,
    is_live = false,
    was_finished = {finished("h.")},
    was_in_flight = {in_flight("h.")}
FROM {HISTORY_BY_TIME} h
WHERE NOT staged.was_stored AND h.id = staged.id AND h.queued_at = staged.queued_at
"""
_UNTOUCHED = "DELETE FROM staged WHERE NOT changed AND NOT (was_stored AND was_in_flight)"
_MERGE_LIVE = f"""
MERGE INTO events_live USING (SELECT * FROM staged WHERE changed OR is_live) s
ON events_live.id = s.id
WHEN MATCHED AND s.changed THEN UPDATE SET
    {", ".join(f"{c} = s.{c}" for c in COLUMNS if c != "id")},
    last_seen_at = $now, stale_since = NULL
WHEN MATCHED THEN UPDATE SET last_seen_at = $now, stale_since = NULL
WHEN NOT MATCHED THEN INSERT ({", ".join(_STORED)})
    VALUES ({", ".join(f"s.{c}" for c in COLUMNS)}, coalesce(s.old_first_seen_at, $now), $now, NULL)
"""
# In-flight runs of the sources whose full window was just read, missing from it, and not seen
# for `stale_after`: they left the window without finishing.
_MARK_STALE = f"""
UPDATE events_live SET stale_since = $now
WHERE source_id IN (SELECT unnest($windows::UUID[]))
  AND stale_since IS NULL AND {in_flight()}
  AND id NOT IN (SELECT id FROM page_in)
  AND last_seen_at < $cutoff
RETURNING project_id, source_id
"""
# Each page's poll succeeded: record it in the same transaction as its events, so the state a
# restart resumes from always matches what is stored.
_RECORD_SUCCESS = """
INSERT INTO poll_state AS s (project_id, source_id, last_poll_at, last_success_at, last_outcome,
    last_error_reason, last_error_message, page_limit, interval_seconds, successful_polls,
    newest_event_id, newest_event_queued_at, window_start)
SELECT unnest($project_ids::UUID[]), unnest($source_ids::UUID[]), $now, $now, 'success', NULL,
    NULL, unnest($limits::INTEGER[]), unnest($intervals::DOUBLE[]), unnest($polls::BIGINT[]),
    unnest($newest_ids::UUID[]), unnest($newest_queued::TIMESTAMPTZ[]),
    unnest($window_starts::TIMESTAMPTZ[])
ON CONFLICT (project_id, source_id) DO UPDATE SET
    last_poll_at = excluded.last_poll_at,
    last_success_at = excluded.last_success_at,
    last_outcome = excluded.last_outcome,
    last_error_reason = NULL,
    last_error_message = NULL,
    page_limit = coalesce(excluded.page_limit, s.page_limit),
    interval_seconds = coalesce(excluded.interval_seconds, s.interval_seconds),
    successful_polls = s.successful_polls + excluded.successful_polls,
    newest_event_id = coalesce(excluded.newest_event_id, s.newest_event_id),
    newest_event_queued_at = coalesce(excluded.newest_event_queued_at, s.newest_event_queued_at),
    window_start = coalesce(excluded.window_start, s.window_start)
"""


@dataclass(frozen=True)
class PageIn:
    """One polled page on its way into the store."""

    project_id: UUID
    source_id: UUID
    events: Sequence[GenerationEvent]
    full_window: bool = False
    next_limit: int | None = None
    next_interval: float | None = None
    # Finished runs the poller knows are stored exactly as they are in this page: they are
    # not written again, so their ``last_seen_at`` keeps the poll that last wrote them.
    unchanged: frozenset[UUID] = frozenset()

    @property
    def key(self) -> SourceKey:
        return self.project_id, self.source_id


@dataclass(frozen=True)
class Written:
    """What one batch did: runs flagged stale per source, and rows that went into live."""

    stale: dict[SourceKey, int]
    added_to_live: int
    events: int
    looked_in_history: bool = False
    revived: int = 0


def page_table(events: Sequence[GenerationEvent]) -> pa.Table:
    """Turn validated events into one Arrow table, a column at a time.

    Ids a page repeats (project, source, team, schema version) are turned into text once, and
    JSON is written by pydantic-core: together half the time of the obvious loop.
    """
    text: dict[int, str] = {}  # keyed by the UUID's number: UUID hashes in Python, int in C

    def uuid_text(value: UUID | None) -> str | None:
        if value is None:
            return None
        found = text.get(value.int)
        if found is None:
            found = text[value.int] = str(value)
        return found

    return pa.table(
        {
            # 32 hex digits, which DuckDB casts to UUID as it does the usual form, at a third of
            # the cost of str()
            "id": [f"{e.id.int:032x}" for e in events],
            "project_id": [uuid_text(e.project_id) for e in events],
            "source_id": [uuid_text(e.source_id) for e in events],
            "team_id": [uuid_text(e.team_id) for e in events],
            "schema_version_id": [uuid_text(e.schema_version_id) for e in events],
            "slug": [e.slug for e in events],
            "trigger": [e.trigger for e in events],
            "status": [e.status for e in events],
            "queued_at": [e.queued_at for e in events],
            "started_at": [e.started_at for e in events],
            "finished_at": [e.finished_at for e in events],
            "duration_ms": [e.duration_ms for e in events],
            "total_inserted_rows": [e.total_inserted_rows for e in events],
            "billable_rows": [e.billable_rows for e in events],
            "error_message": [e.error_message for e in events],
            "metadata": [to_json(e.metadata).decode() for e in events],
            "extra": [to_json(e.model_extra or {}, fallback=str).decode() for e in events],
            "created_at": [e.created_at for e in events],
            "updated_at": [e.updated_at for e in events],
        },
        schema=PAGE_SCHEMA,
    )


_QUEUED = attrgetter("queued_at")


def _poll_params(pages: Sequence[PageIn]) -> dict[str, list[Any]]:
    """One row per source in the batch (the last page of a source wins), as list parameters."""
    latest: dict[SourceKey, PageIn] = {}
    counts: dict[SourceKey, int] = {}
    for page in pages:
        latest[page.key] = page
        counts[page.key] = counts.get(page.key, 0) + 1
    newest = [max(p.events, key=_QUEUED, default=None) for p in latest.values()]
    return {
        "project_ids": [str(k[0]) for k in latest],
        "source_ids": [str(k[1]) for k in latest],
        "limits": [p.next_limit for p in latest.values()],
        "intervals": [p.next_interval for p in latest.values()],
        "polls": list(counts.values()),
        "newest_ids": [str(e.id) if e else None for e in newest],
        "newest_queued": [e.queued_at if e else None for e in newest],
        "window_starts": [
            min(map(_QUEUED, p.events), default=None) if p.full_window else None
            for p in latest.values()
        ],
    }


def write_batch(
    conn: duckdb.DuckDBPyConnection,
    pages: Sequence[PageIn],
    *,
    now: datetime,
    stale_after: timedelta,
    rollups: totals.Rollups,
    history_newest: datetime | None,
) -> Written:
    """Store a batch of pages in one transaction.

    ``history_newest`` is the newest ``queued_at`` in history: a run queued after it cannot be
    there, so history is not even looked at for the usual batch of new and live runs.
    """
    events = [e for p in pages for e in p.events if not p.unchanged or e.id not in p.unchanged]
    page = page_table(events)
    windows = [str(p.source_id) for p in pages if p.full_window]
    stale: dict[SourceKey, int] = dict.fromkeys((p.key for p in pages), 0)
    added = revived = 0
    looked = False
    with registered(conn, page=page), transaction(conn):
        if page.num_rows:
            unique = len({e.id.int for e in events}) == len(events)
            conn.execute(_LOAD if unique else _LOAD_DEDUPED)
            conn.execute(_STAGE)
            if history_newest is not None and scalar(
                conn,
                "SELECT count(*) FROM staged WHERE NOT was_stored AND queued_at <= $newest",
                {"newest": history_newest},
            ):
                looked = True
                conn.execute(_FROM_HISTORY)
                conn.execute(_UNTOUCHED)
            rows, changed, revived, new = conn.execute(
                """SELECT count(*), count(*) FILTER (WHERE changed),
                          count(*) FILTER (WHERE was_stored AND NOT is_live),
                          count(*) FILTER (WHERE NOT was_stored)
                   FROM staged"""
            ).fetchall()[0]
            if changed:
                totals.apply_changes(conn, rollups)
            if revived:
                history.revive(conn, now)
            if rows:
                conn.execute(_MERGE_LIVE, {"now": now})
            added = int(new) + int(revived)
        if windows:
            marked = conn.execute(
                _MARK_STALE, {"now": now, "cutoff": now - stale_after, "windows": windows}
            )
            for project_id, source_id in marked.fetchall():
                stale[(project_id, source_id)] = stale.get((project_id, source_id), 0) + 1
        conn.execute(_RECORD_SUCCESS, {"now": now, **_poll_params(pages)})
        conn.execute("DELETE FROM page_in")
        conn.execute("DELETE FROM staged")
    return Written(
        stale=stale,
        added_to_live=added,
        events=page.num_rows,
        looked_in_history=looked,
        revived=int(revived),
    )
