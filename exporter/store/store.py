"""The :class:`Store`: the one owner of the DuckDB file.

Every write takes the store's lock, so two writes never interleave on its connection. Polls
hand theirs to :meth:`Store.call`, one write thread, so the event loop never blocks on DuckDB;
the export writes its bookkeeping from the worker thread it runs on, and a one-shot command
that holds the file alone (``regenerate`` storing its run, ``export``) calls the store
directly. Readers take their own cursor (a connection of the same database) and run beside
the writes.
What the store does is in the package's other modules (schema, ingest, totals, history,
bookkeeping, reads); this one is their owner's lifecycle (open, migrate, heal, reopen,
checkpoint, close) and the locked entry points that call them. It stays one module a few lines
past 400: each entry point is a lock, a transaction and one call, and moving them away from the
lock and the healing they rely on would split one rule over two files.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ParamSpec, TypeVar
from uuid import UUID

import duckdb

from exporter.errors import StoreError
from exporter.models import GenerationEvent, SourceKey
from exporter.store import bookkeeping, history, reads, totals
from exporter.store.db import (
    MEMORY_LIMIT,
    connect,
    first_line,
    registered,
    transaction,
    writes,
)
from exporter.store.db import schema_version as read_schema_version
from exporter.store.ingest import WORK_TABLES, PageIn, page_table, write_batch
from exporter.store.schema import LIVE_MAX_AGE, LIVE_PER_SOURCE, MIGRATIONS
from exporter.window import Window

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# Retire (move to history) after this many runs entered live, or this long after the last time:
# often enough that live stays near its bound, rarely enough to cost nothing per poll.
RETIRE_AFTER_ROWS = 5_000
RETIRE_AFTER = timedelta(minutes=10)
# Checkpoint after retiring at most this often: it bounds the WAL (and a restart's replay) to a
# few minutes of writes; every retirement would cost a checkpoint of the history per burst.
CHECKPOINT_EVERY = timedelta(minutes=10)


@dataclass
class WriteStats:
    """The store's own activity since it was opened, for the exporter's self-metrics."""

    batches: int = 0
    events: int = 0
    seconds: float = 0.0
    retired: int = 0
    # batches with a run that may have been in history, and runs that came back from it
    history_lookups: int = 0
    revived: int = 0


@dataclass
class StoreHealth:
    """Whether writes go through: what /readyz, the landing page and the metrics show."""

    errors: int = 0  # writes that failed and were rolled back
    reopened: int = 0  # times the database was reopened after DuckDB invalidated it
    failing_since: float | None = None  # Unix time of the first failure since the last success
    last_error: str | None = None


class Store:
    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        memory_limit: str = MEMORY_LIMIT,
        threads: int = 2,
        rollups: totals.Rollups | None = None,
        live_per_source: int = LIVE_PER_SOURCE,
        live_max_age: timedelta = LIVE_MAX_AGE,
    ) -> None:
        """``rollups``: the histogram bounds and billing timezone the totals must follow; a
        change rebuilds what depends on it. None keeps what the database was built with (for
        commands that only store a run or read)."""
        self.path = Path(path)
        self.read_only = read_only
        self.live_per_source = live_per_source
        self.live_max_age = live_max_age
        self.stats = WriteStats()
        self.health = StoreHealth()
        self._settings: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": memory_limit,
            "threads": threads,
        }
        self._conn = connect(self.path, read_only, self._settings)
        self._invalidated: str | None = None
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._generation = 0
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-write")
        self._added_since_retire = 0
        self._retired_at = time.monotonic()
        self._checkpointed_at: float | None = None
        try:
            if read_only:
                self.rollups = totals.stored_rollups(self._conn) or totals.Rollups()
            else:
                self._migrate()
                self.rollups = self._sync_rollups(rollups)
                try:
                    self._prepare_connection()
                except duckdb.Error as exc:
                    raise StoreError(
                        f"{self.path}: cannot open the database: {first_line(exc)}"
                    ) from exc
                self.retire(datetime.now(UTC))
        except BaseException:
            self._conn.close()
            raise

    def close(self, checkpoint: bool = True) -> None:
        """Finish queued writes, then checkpoint so the next start needs no WAL replay.

        A failed checkpoint loses nothing (the WAL holds every commit), so it is only logged.
        """
        self._write_thread.shutdown(wait=True)
        with self._lock:
            for cur in self._cursors:
                cur.close()
            if checkpoint and not self.read_only:
                try:
                    self._conn.execute("CHECKPOINT")
                except duckdb.Error as exc:
                    log.warning("checkpoint on close skipped: %s", first_line(exc))
            self._conn.close()

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store method on the write thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_thread, lambda: fn(*args, **kwargs))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's reader cursor: reads run beside the writes, never on their connection.
        A new one after the database was reopened."""
        if self._invalidated is not None:
            raise StoreError(f"{self.path}: unusable until reopened: {self._invalidated}")
        mine: tuple[int, duckdb.DuckDBPyConnection] | None = getattr(self._readers, "cursor", None)
        if mine is None or mine[0] != self._generation:
            with self._lock:
                cur = self._conn.cursor()
                self._cursors.append(cur)
                mine = (self._generation, cur)
            cur.execute("SET TimeZone = 'UTC'")
            self._readers.cursor = mine
        return mine[1]

    def set_memory_limit(self, limit: str) -> None:
        """Change ``database.memory_limit`` of the open database (a reloaded config)."""
        with self._lock:
            self._conn.execute(f"SET memory_limit = '{limit}'")
            self._settings["memory_limit"] = limit

    def write_failed(self, error: BaseException) -> None:
        """Every failed write: counted, its cause kept for /readyz and the landing page. A
        fatal DuckDB error (the database invalidated, e.g. by a checkpoint that could not
        remove its WAL) makes the next write reopen the database. Only a committed batch says
        the store is writable again (``ingest``): a one-row write that still goes through
        under memory pressure must not."""
        self.health.errors += 1
        self.health.last_error = str(error) if isinstance(error, StoreError) else first_line(error)
        if self.health.failing_since is None:
            self.health.failing_since = time.time()
        if isinstance(error, duckdb.FatalException):
            self._invalidated = first_line(error)

    def heal(self) -> None:
        """Reopen a database DuckDB invalidated: it refuses every statement until the instance
        is closed and opened again, which a restart would do; this does it in place. Nothing
        committed is lost (the WAL holds it). Reader cursors are closed with it (a query
        running on one waits for it; on an invalidated database it fails at once), and each
        thread opens a new one. Raises StoreError while the database cannot be reopened."""
        with self._lock:
            if self._invalidated is None:
                return
            for cur in self._cursors:
                with suppress(duckdb.Error):
                    cur.close()
            self._cursors.clear()
            self._generation += 1
            with suppress(duckdb.Error):
                self._conn.close()
            self._conn = connect(self.path, False, self._settings)
            try:
                self._prepare_connection()
            except duckdb.Error as exc:
                raise StoreError(
                    f"{self.path}: cannot reopen the database: {first_line(exc)}"
                ) from exc
            log.warning("database %s reopened after: %s", self.path, self._invalidated)
            self._invalidated = None
            self.health.reopened += 1

    def schema_version(self) -> int:
        return read_schema_version(self._conn)

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
        for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
            started = time.perf_counter()
            try:
                with transaction(self._conn):
                    if callable(migration):
                        migration(self._conn)
                    else:
                        self._conn.execute(migration)
                    self._conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (?)", [version]
                    )
            except duckdb.Error as exc:
                raise StoreError(
                    f"{self.path}: migrating to schema v{version} failed: {first_line(exc)}"
                ) from exc
            log.info(
                "database %s migrated to schema v%d in %.1fs",
                self.path,
                version,
                time.perf_counter() - started,
            )

    def _prepare_connection(self) -> None:
        with registered(self._conn, page_schema=page_table([])):
            self._conn.execute(WORK_TABLES)
        self._history_newest = history.newest(self._conn)

    @writes
    def _sync_rollups(self, wanted: totals.Rollups | None) -> totals.Rollups:
        built = totals.stored_rollups(self._conn)
        if wanted is None and built is not None:
            return built
        wanted = wanted or totals.Rollups()
        if built == wanted:
            return built
        started = time.perf_counter()
        with transaction(self._conn):
            if built is None:
                totals.rebuild(self._conn, wanted)
            else:
                totals.adapt(self._conn, built, wanted)
        log.info("totals built for %s in %.1fs", wanted, time.perf_counter() - started)
        return wanted

    @writes
    def ingest(
        self, pages: Sequence[PageIn], *, now: datetime, stale_after: timedelta
    ) -> dict[SourceKey, int]:
        """Upsert a batch of pages in one transaction; flag runs that left a full window.

        Returns how many runs were flagged stale, per source. Only pages that were the full
        window take part in the stale check: a run missing from a deliberately small page has
        not left anything. Afterwards, when due, runs that can no longer change are retired.
        """
        started = time.perf_counter()
        with self._lock:
            written = write_batch(
                self._conn,
                pages,
                now=now,
                stale_after=stale_after,
                rollups=self.rollups,
                history_newest=self._history_newest,
            )
        if self._invalidated is None:
            self.health.failing_since = None
        self.stats.batches += 1
        self.stats.events += written.events
        self.stats.seconds += time.perf_counter() - started
        self.stats.history_lookups += written.looked_in_history
        self.stats.revived += written.revived
        self._added_since_retire += written.added_to_live
        if self._retire_due():
            self._retire_quietly(now)
        return written.stale

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

    def _retire_due(self) -> bool:
        return (
            self._added_since_retire >= RETIRE_AFTER_ROWS
            or time.monotonic() - self._retired_at >= RETIRE_AFTER.total_seconds()
        )

    def _retire_quietly(self, now: datetime) -> None:
        """Retiring is housekeeping after a committed batch: its failure must not fail the poll
        that triggered it. It is counted and logged, and tried again after the next batch."""
        try:
            self._retire(now)
        except duckdb.Error as exc:
            self.write_failed(exc)
            log.error(
                "moving finished runs to history failed (will retry): %s",
                first_line(exc),
                extra={"repeat_key": f"retire {first_line(exc)}"},
            )

    @writes
    def retire(self, now: datetime) -> int:
        """Move the live runs that can no longer change to history; returns how many. Then, at
        most every CHECKPOINT_EVERY, checkpoint: a restart replays little WAL."""
        return self._retire(now)

    def _retire(self, now: datetime) -> int:
        with self._lock, transaction(self._conn):
            moved = history.retire(self._conn, now, self.live_per_source, self.live_max_age)
            self._history_newest = history.newest(self._conn)
        self._added_since_retire = 0
        self._retired_at = time.monotonic()
        self.stats.retired += moved
        if moved:
            log.debug("moved %d finished run(s) to history", moved)
            last = self._checkpointed_at
            if last is None or time.monotonic() - last >= CHECKPOINT_EVERY.total_seconds():
                self._checkpoint()
        return moved

    def _checkpoint(self) -> None:
        """A checkpoint that cannot run now (another transaction is writing) is left for the
        next; one that fails for good invalidates the database: that must reach
        ``write_failed``."""
        try:
            with self._lock:
                self._conn.execute("CHECKPOINT")
            self._checkpointed_at = time.monotonic()
        except duckdb.FatalException:
            raise
        except duckdb.Error as exc:
            log.info("checkpoint skipped: %s", first_line(exc))

    @writes
    def record_failure(
        self, project_id: UUID, source_id: UUID, *, now: datetime, reason: str, message: str
    ) -> None:
        """A poll that stored nothing; successes are recorded with their page in ``ingest``."""
        with self._lock, transaction(self._conn):
            bookkeeping.record_failure(
                self._conn, project_id, source_id, now=now, reason=reason, message=message
            )

    @writes
    def sync_sources(self, names: Sequence[tuple[UUID, UUID, str, str]]) -> None:
        """Keep the configured names beside the ids, so SQL reports can speak in names."""
        with self._lock, transaction(self._conn):
            bookkeeping.sync_sources(self._conn, names)

    @writes
    def record_export(
        self, project_id: UUID, source_id: UUID, month: str, fingerprint: str, now: datetime
    ) -> None:
        with self._lock:
            bookkeeping.record_export(self._conn, project_id, source_id, month, fingerprint, now)

    def poll_states(self) -> dict[SourceKey, reads.PollState]:
        return reads.poll_states(self.cursor())

    def event_counts(self) -> dict[SourceKey, int]:
        return reads.run_counts(self.cursor())

    def export_fingerprints(self) -> dict[tuple[UUID, UUID, str], str]:
        return reads.export_fingerprints(self.cursor())

    def windows(self, per_source: int) -> dict[SourceKey, Window]:
        return reads.windows(self.cursor(), per_source)
