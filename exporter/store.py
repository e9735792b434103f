"""DuckDB storage: schema and migrations, page upserts, poll state.

One :class:`Store` owns the database file. All writes run on its single writer thread, so the
event loop never blocks on DuckDB and two writes never interleave; readers take their own cursor.
A page is upserted in one transaction through Arrow: DuckDB sees one columnar table and one
``INSERT ... ON CONFLICT`` statement, never a row at a time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from exporter.models import PROGRESS_FIELDS, GenerationEvent, fingerprint
from exporter.window import Window

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        id UUID PRIMARY KEY,
        project_id UUID NOT NULL,
        source_id UUID NOT NULL,
        team_id UUID,
        schema_version_id UUID,
        slug VARCHAR,
        trigger VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        queued_at TIMESTAMPTZ NOT NULL,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        duration_ms BIGINT,
        total_inserted_rows BIGINT NOT NULL,
        billable_rows BIGINT NOT NULL,
        error_message VARCHAR,
        metadata JSON,
        extra JSON,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ,
        first_seen_at TIMESTAMPTZ NOT NULL,
        last_seen_at TIMESTAMPTZ NOT NULL,
        stale_since TIMESTAMPTZ
    );
    CREATE TABLE poll_state (
        project_id UUID NOT NULL,
        source_id UUID NOT NULL,
        last_poll_at TIMESTAMPTZ,
        last_success_at TIMESTAMPTZ,
        last_outcome VARCHAR,
        last_error_reason VARCHAR,
        last_error_message VARCHAR,
        newest_event_id UUID,
        newest_event_queued_at TIMESTAMPTZ,
        page_limit INTEGER,
        interval_seconds DOUBLE,
        successful_polls BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (project_id, source_id)
    );
    """,
    """
    CREATE TABLE sources (
        project_id UUID NOT NULL,
        source_id UUID NOT NULL,
        project_name VARCHAR NOT NULL,
        source_name VARCHAR NOT NULL,
        configured BOOLEAN NOT NULL DEFAULT true,
        PRIMARY KEY (project_id, source_id)
    );
    CREATE TABLE export_state (
        project_id UUID NOT NULL,
        source_id UUID NOT NULL,
        month VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        exported_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (project_id, source_id, month)
    );
    CREATE VIEW runs AS
    SELECT
        e.*,
        coalesce(s.project_name, e.project_id::VARCHAR) AS project,
        coalesce(s.source_name, e.source_id::VARCHAR) AS source,
        (e.status IN ('success', 'failed') OR e.finished_at IS NOT NULL) AS finished,
        e.duration_ms / 1000.0 AS duration_seconds,
        epoch(e.started_at) - epoch(e.queued_at) AS queue_wait_seconds
    FROM events e LEFT JOIN sources s USING (project_id, source_id);
    """,
)

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
_CASTS = {
    "id": "UUID",
    "project_id": "UUID",
    "source_id": "UUID",
    "team_id": "UUID",
    "schema_version_id": "UUID",
    "metadata": "JSON",
    "extra": "JSON",
}
_COLUMNS = PAGE_SCHEMA.names
_SELECT = ", ".join(f"{c}::{_CASTS[c]} AS {c}" if c in _CASTS else c for c in _COLUMNS)
_PAGE_TS = "coalesce(p.updated_at, p.created_at)"
_STORED_TS = "coalesce(events.updated_at, events.created_at)"
# A copy with the stored timestamp rewrites the row only if its progress differs: rewriting every
# column of runs seen before, unchanged, was most of the cost of a warm poll.
_CHANGED = (
    f"{_PAGE_TS} > {_STORED_TS} OR ({_PAGE_TS} = {_STORED_TS} AND "
    f"({', '.join(f'p.{c}' for c in PROGRESS_FIELDS)}) IS DISTINCT FROM "
    f"({', '.join(f'events.{c}' for c in PROGRESS_FIELDS)}))"
)
# GenerationEvent.fingerprint's parts, as DuckDB can hand them over cheaply: ints, not datetimes.
_FINGERPRINT = ", ".join(
    [
        "epoch_us(coalesce(updated_at, created_at))",
        *(f"epoch_us({c})" if c.endswith("_at") else c for c in PROGRESS_FIELDS),
    ]
)
_WINDOWS = f"""
SELECT project_id::VARCHAR, source_id::VARCHAR, replace(id::VARCHAR, '-', ''), {_FINGERPRINT}
FROM (
    SELECT e.project_id, e.source_id, e.id, e.queued_at, e.created_at, e.updated_at,
           {", ".join(f"e.{c}" for c in PROGRESS_FIELDS)},
           least($n, coalesce(s.page_limit, $n)) AS keep
    FROM events e LEFT JOIN poll_state s USING (project_id, source_id)
    WHERE e.source_id IN (SELECT unnest($sources::UUID[]))
    QUALIFY row_number() OVER (
        PARTITION BY e.project_id, e.source_id ORDER BY e.queued_at DESC, e.id
    ) <= keep
)
ORDER BY project_id, source_id
"""
# One MERGE for a whole batch of pages. An older copy (by updatedAt) never overwrites a newer
# stored one, and the sighting (last_seen_at) is recorded either way. MERGE may touch a row once,
# so a batch listing one id twice (a page repeating itself, or two pages of the same source) goes
# through _DEDUPED, where only the newest copy of each id takes part; the window that costs is
# skipped for the usual batch without repeats.
_DEDUPED = f"""
SELECT {_SELECT} FROM page
QUALIFY row_number() OVER (
    PARTITION BY id ORDER BY coalesce(updated_at, created_at) DESC, status
) = 1
"""


def _merge(source: str) -> str:
    return f"""
MERGE INTO events
USING ({source}) AS p
ON events.id = p.id
WHEN MATCHED AND ({_CHANGED}) THEN UPDATE SET
    {", ".join(f"{c} = p.{c}" for c in _COLUMNS if c != "id")},
    last_seen_at = $now, stale_since = NULL
WHEN MATCHED THEN UPDATE SET last_seen_at = $now, stale_since = NULL
WHEN NOT MATCHED THEN INSERT ({", ".join(_COLUMNS)}, first_seen_at, last_seen_at, stale_since)
    VALUES ({", ".join(f"p.{c}" for c in _COLUMNS)}, $now, $now, NULL)
"""


_MERGE = _merge(f"SELECT {_SELECT} FROM page")
_MERGE_DEDUPED = _merge(_DEDUPED)
# In-progress runs of the sources whose full window was just read, missing from it, and not seen
# for `stale_after`: they left the window without finishing.
_MARK_STALE = """
UPDATE events SET stale_since = $now
WHERE source_id IN (SELECT source_id::UUID FROM windows)
  AND stale_since IS NULL AND finished_at IS NULL AND status IN ('queued', 'active')
  AND id NOT IN (SELECT id::UUID FROM page)
  AND last_seen_at < $cutoff
RETURNING project_id, source_id
"""


# Each page's poll succeeded: record it in the same transaction as its events, so the state a
# restart resumes from always matches what is stored.
_RECORD_SUCCESS = """
INSERT INTO poll_state AS s (project_id, source_id, last_poll_at, last_success_at, last_outcome,
    last_error_reason, last_error_message, page_limit, interval_seconds, successful_polls,
    newest_event_id, newest_event_queued_at)
SELECT project_id::UUID, source_id::UUID, $now, $now, 'success', NULL, NULL, page_limit,
    interval_seconds, polls, newest_id::UUID, newest_queued_at
FROM polls
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
    newest_event_queued_at = coalesce(excluded.newest_event_queued_at, s.newest_event_queued_at)
"""


def _polls_table(pages: Sequence[PageIn]) -> pa.Table:
    """One row per source in the batch (the last page of a source wins)."""
    latest: dict[tuple[UUID, UUID], PageIn] = {}
    counts: dict[tuple[UUID, UUID], int] = {}
    for page in pages:
        latest[page.key] = page
        counts[page.key] = counts.get(page.key, 0) + 1
    newest = {k: max(p.events, key=lambda e: e.queued_at, default=None) for k, p in latest.items()}
    return pa.table(
        {
            "project_id": [str(k[0]) for k in latest],
            "source_id": [str(k[1]) for k in latest],
            "page_limit": pa.array([p.next_limit for p in latest.values()], pa.int32()),
            "interval_seconds": pa.array([p.next_interval for p in latest.values()], pa.float64()),
            "polls": [counts[k] for k in latest],
            "newest_id": [str(e.id) if e else None for e in newest.values()],
            "newest_queued_at": pa.array(
                [e.queued_at if e else None for e in newest.values()], pa.timestamp("us", tz="UTC")
            ),
        }
    )


class StoreError(Exception):
    """The database cannot be opened or written, worded for the operator."""


def _writes(method: Callable[Concatenate[Store, P], T]) -> Callable[Concatenate[Store, P], T]:
    """A failed write (disk full, read-only file system, ...) becomes a StoreError that names
    the database, instead of a DuckDB exception escaping to whoever called."""

    @functools.wraps(method)
    def wrapper(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: database write failed: {_first_line(exc)}") from None

    return wrapper


class DatabaseLocked(StoreError):
    """Another process (usually a running exporter) holds the database file."""


@dataclass(frozen=True)
class PageIn:
    """One polled page on its way into the store."""

    project_id: UUID
    source_id: UUID
    events: Sequence[GenerationEvent]
    full_window: bool = False
    next_limit: int | None = None
    next_interval: float | None = None
    # Finished runs the collector knows are stored exactly as they are in this page: they are
    # not written again, so their ``last_seen_at`` keeps the poll that last wrote them.
    unchanged: frozenset[UUID] = frozenset()

    @property
    def key(self) -> tuple[UUID, UUID]:
        return self.project_id, self.source_id


@dataclass(frozen=True)
class PollState:
    project_id: UUID
    source_id: UUID
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_outcome: str | None
    last_error_reason: str | None
    last_error_message: str | None
    page_limit: int | None
    interval_seconds: float | None
    successful_polls: int


def page_table(events: Sequence[GenerationEvent]) -> pa.Table:
    """Turn validated events into one Arrow table, column by column."""
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    for e in events:
        columns["id"].append(str(e.id))
        columns["project_id"].append(str(e.project_id))
        columns["source_id"].append(str(e.source_id))
        columns["team_id"].append(str(e.team_id) if e.team_id else None)
        columns["schema_version_id"].append(
            str(e.schema_version_id) if e.schema_version_id else None
        )
        columns["slug"].append(e.slug)
        columns["trigger"].append(e.trigger)
        columns["status"].append(e.status)
        columns["queued_at"].append(e.queued_at)
        columns["started_at"].append(e.started_at)
        columns["finished_at"].append(e.finished_at)
        columns["duration_ms"].append(e.duration_ms)
        columns["total_inserted_rows"].append(e.total_inserted_rows)
        columns["billable_rows"].append(e.billable_rows)
        columns["error_message"].append(e.error_message)
        columns["metadata"].append(json.dumps(e.metadata))
        columns["extra"].append(json.dumps(e.extra_fields, default=str))
        columns["created_at"].append(e.created_at)
        columns["updated_at"].append(e.updated_at)
    return pa.table(columns, schema=PAGE_SCHEMA)


class Store:
    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        memory_limit: str = "80MB",
        threads: int = 2,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._conn = _connect(
            self.path, read_only, {"memory_limit": memory_limit, "threads": threads}
        )
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer")
        if not read_only:
            self._migrate()

    def close(self, checkpoint: bool = True) -> None:
        """Finish queued writes, then checkpoint so the next start needs no WAL replay.

        A failed checkpoint loses nothing (the WAL holds every commit), so it is only logged.
        """
        self._writer.shutdown(wait=True)
        with self._lock:
            for cur in self._cursors:
                cur.close()
            if checkpoint and not self.read_only:
                try:
                    self._conn.execute("CHECKPOINT")
                except duckdb.Error as exc:
                    log.warning("checkpoint on close skipped: %s", _first_line(exc))
            self._conn.close()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store method on the writer thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(*args, **kwargs))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's reader cursor: reads run beside the writer, never on its connection."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._readers, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._conn.cursor()
                self._cursors.append(cur)
            cur.execute("SET TimeZone = 'UTC'")
            self._readers.cursor = cur
        return cur

    def schema_version(self) -> int:
        version = scalar(self._conn, "SELECT max(version) FROM schema_migrations")
        return int(version) if version is not None else 0

    def _migrate(self) -> None:
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: database schema v{current} is newer than this exporter"
                f" (v{len(MIGRATIONS)}); upgrade synthbrew-exporter"
            )
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            with self._transaction():
                self._conn.execute(sql)
                self._conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", [version])
            log.info("database %s migrated to schema v%d", self.path, version)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    @_writes
    def ingest(
        self, pages: Sequence[PageIn], *, now: datetime, stale_after: timedelta
    ) -> dict[tuple[UUID, UUID], int]:
        """Upsert a batch of pages in one transaction; flag runs that left a full window.

        Returns how many runs were flagged stale, per source. Only pages that were the full
        window take part in the stale check: a run missing from a deliberately small page has
        not left anything.
        """
        table = page_table([e for p in pages for e in p.events if e.id not in p.unchanged])
        windows = pa.table({"source_id": [str(p.source_id) for p in pages if p.full_window]})
        stale: dict[tuple[UUID, UUID], int] = dict.fromkeys((p.key for p in pages), 0)
        with self._lock, self._transaction():
            conn = self._conn
            conn.register("page", table)
            conn.register("windows", windows)
            try:
                if table.num_rows:
                    unique = pc.count_distinct(table["id"]).as_py() == table.num_rows
                    conn.execute(_MERGE if unique else _MERGE_DEDUPED, {"now": now})
                if windows.num_rows:
                    marked = conn.execute(
                        _MARK_STALE, {"now": now, "cutoff": now - stale_after}
                    ).fetchall()
                    for project_id, source_id in marked:
                        stale[(project_id, source_id)] = stale.get((project_id, source_id), 0) + 1
                conn.register("polls", _polls_table(pages))
                conn.execute(_RECORD_SUCCESS, {"now": now})
            finally:
                for name in ("page", "windows", "polls"):
                    conn.unregister(name)
        return stale

    def ingest_page(
        self,
        project_id: UUID,
        source_id: UUID,
        events: Sequence[GenerationEvent],
        *,
        now: datetime,
        stale_after: timedelta | None = None,
    ) -> int:
        """One page on its own (``stale_after`` only for a full window); returns runs flagged."""
        page = PageIn(project_id, source_id, events, full_window=stale_after is not None)
        marked = self.ingest([page], now=now, stale_after=stale_after or timedelta())
        return marked[page.key]

    @_writes
    def record_failure(
        self, project_id: UUID, source_id: UUID, *, now: datetime, reason: str, message: str
    ) -> None:
        """A poll that stored nothing; successes are recorded with their page in ``ingest``."""
        with self._lock, self._transaction():
            self._conn.execute(
                """
                INSERT INTO poll_state AS s (project_id, source_id, last_poll_at, last_outcome,
                    last_error_reason, last_error_message)
                VALUES ($project, $source, $now, 'error', $reason, $message)
                ON CONFLICT (project_id, source_id) DO UPDATE SET
                    last_poll_at = excluded.last_poll_at,
                    last_outcome = excluded.last_outcome,
                    last_error_reason = excluded.last_error_reason,
                    last_error_message = excluded.last_error_message
                """,
                {
                    "project": project_id,
                    "source": source_id,
                    "now": now,
                    "reason": reason,
                    "message": message,
                },
            )

    def poll_states(self) -> dict[tuple[UUID, UUID], PollState]:
        cur = self.cursor()
        rows = cur.execute(
            """SELECT project_id, source_id, last_poll_at, last_success_at, last_outcome,
                      last_error_reason, last_error_message, page_limit, interval_seconds,
                      successful_polls
               FROM poll_state"""
        ).fetchall()
        return {(r[0], r[1]): PollState(*r) for r in rows}

    @_writes
    def sync_sources(self, names: Sequence[tuple[UUID, UUID, str, str]]) -> None:
        """Keep the configured names beside the ids, so SQL reports can speak in names.

        Sources no longer configured keep their last names and are marked ``configured = false``:
        their history stays queryable.
        """
        table = pa.table(
            {
                "project_id": [str(n[0]) for n in names],
                "source_id": [str(n[1]) for n in names],
                "project_name": [n[2] for n in names],
                "source_name": [n[3] for n in names],
            }
        )
        with self._lock, self._transaction():
            self._conn.register("configured", table)
            try:
                self._conn.execute("UPDATE sources SET configured = false")
                self._conn.execute(
                    """INSERT INTO sources
                       SELECT project_id::UUID, source_id::UUID, project_name, source_name, true
                       FROM configured
                       ON CONFLICT (project_id, source_id) DO UPDATE SET
                           project_name = excluded.project_name,
                           source_name = excluded.source_name, configured = true"""
                )
            finally:
                self._conn.unregister("configured")

    def export_fingerprints(self) -> dict[tuple[UUID, UUID, str], str]:
        rows = (
            self.cursor()
            .execute("SELECT project_id, source_id, month, fingerprint FROM export_state")
            .fetchall()
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    @_writes
    def record_export(
        self, project_id: UUID, source_id: UUID, month: str, fingerprint: str, now: datetime
    ) -> None:
        with self._lock:
            self._conn.execute(
                """INSERT INTO export_state VALUES ($p, $s, $m, $f, $now)
                   ON CONFLICT (project_id, source_id, month) DO UPDATE SET
                       fingerprint = excluded.fingerprint, exported_at = excluded.exported_at""",
                {"p": project_id, "s": source_id, "m": month, "f": fingerprint, "now": now},
            )

    def event_counts(self) -> dict[tuple[UUID, UUID], int]:
        rows = (
            self.cursor()
            .execute("SELECT project_id, source_id, count(*) FROM events GROUP BY ALL")
            .fetchall()
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def windows(
        self, per_source: int, sources_per_query: int = 250
    ) -> dict[tuple[UUID, UUID], Window]:
        """Each source's newest stored runs: the window a restarted collector compares its
        first pages with.

        As many per source as its next poll asks for (its stored ``page_limit``, at most
        ``per_source``), exactly what the collector keeps between polls. A window function
        over the whole table needed ~90 MB of DuckDB memory per million events, so sources
        are read ``sources_per_query`` at a time, rows in chunks. Ids come as hex text
        (``UUID.int`` without building UUIDs); DuckDB hands UHUGEINTs to Python 70x slower.
        """
        cur = self.cursor()
        sources = cur.execute("SELECT DISTINCT source_id FROM events ORDER BY 1").fetchall()
        out: dict[tuple[UUID, UUID], Window] = {}
        for i in range(0, len(sources), sources_per_query):
            batch = [str(row[0]) for row in sources[i : i + sources_per_query]]
            result = cur.execute(_WINDOWS, {"n": per_source, "sources": batch})
            for (project_id, source_id), rows in groupby(_chunked(result), itemgetter(0, 1)):
                out[(UUID(project_id), UUID(source_id))] = Window(
                    (int(row[2], 16), fingerprint(*row[3:])) for row in rows
                )
        return out


def _chunked(result: duckdb.DuckDBPyConnection, size: int = 10_000) -> Iterator[tuple[Any, ...]]:
    """A result's rows, fetched ``size`` at a time rather than all at once."""
    while rows := result.fetchmany(size):
        yield from rows


class IngestQueue:
    """Batches the pages of concurrent polls into one transaction per batch.

    A transaction has a fixed cost (planning the MERGE, probing the events table, the WAL
    commit: ~12 ms measured at 200,000 events) that dwarfs inserting 20 rows, so a batch waits
    up to ``linger_seconds`` for more pages before it is written: pages arriving every few
    milliseconds then go in by the dozen rather than by twos. The queue holds at most
    ``max_pages``; a poll with a page beyond that waits to hand it over, which bounds the parsed
    pages held in memory however slow the disk. Each poll still learns its own outcome.
    """

    def __init__(
        self,
        store: Store,
        stale_after: timedelta,
        *,
        max_pages: int = 64,
        linger_seconds: float = 0.05,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.stale_after = stale_after
        self.max_pages = max_pages
        self.linger_seconds = linger_seconds
        self._now = now
        self._queue: asyncio.Queue[tuple[PageIn, asyncio.Future[int]]] = asyncio.Queue(
            maxsize=max_pages
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def put(self, page: PageIn) -> int:
        """Store ``page``; returns how many of its source's runs were flagged stale."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="ingest")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((page, done))
        return await done

    async def _batch(self) -> list[tuple[PageIn, asyncio.Future[int]]]:
        """The next batch: full, or whatever arrived within ``linger_seconds`` of its first page."""
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.linger_seconds
        while len(batch) < self.max_pages:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return batch

    async def _drain(self) -> None:
        while True:
            batch = await self._batch()
            pages = [page for page, _ in batch]
            try:
                marked = await self.store.call(
                    self.store.ingest, pages, now=self._now(), stale_after=self.stale_after
                )
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.batches += 1
            for page, done in batch:
                if not done.done():
                    done.set_result(marked.get(page.key, 0))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class _Transaction:
    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _connect(
    path: Path, read_only: bool, settings: dict[str, str | bool | int | float | list[str]]
) -> duckdb.DuckDBPyConnection:
    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(str(path), read_only=read_only, config=settings)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the database directory: {exc.strerror}") from None
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseLocked(
                f"{path}: the database is locked by another process: {_first_line(exc)}"
            ) from None
        raise StoreError(f"{path}: cannot open the database: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise StoreError(f"{path}: not a usable DuckDB database: {_first_line(exc)}") from None
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> Any:
    """One value, read to the end: a half-read result (fetchone) keeps the cursor busy and its
    transaction open, which blocks a later register() or CHECKPOINT."""
    rows = conn.execute(sql, params).fetchall()
    return rows[0][0] if rows else None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
