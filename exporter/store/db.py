"""Opening the DuckDB file, transactions, and the errors an operator sees.

Every DuckDB error that leaves the store becomes a :class:`StoreError` naming the database and
carrying DuckDB's own first line: the cause is what the log and the landing page show.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import duckdb

from exporter.errors import StoreError

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseLocked(StoreError):
    """Another process (usually a running exporter) holds the database file."""


class PoolFull(StoreError):
    """A write ran out of ``database.memory_limit``. The pool is shared with the reports and
    pages, whose reads end, so the same write usually succeeds a moment later."""


class _Writer(Protocol):
    path: Path

    def heal(self) -> None: ...

    def write_failed(self, error: BaseException) -> None: ...


S = TypeVar("S", bound=_Writer)


def writes(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """A failed write (disk full, out of memory, read-only file system, ...) becomes a
    StoreError that names the database and keeps DuckDB's own message. The store first heals
    a database DuckDB invalidated, and hears of every failure (``write_failed``)."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            self.heal()
            return method(self, *args, **kwargs)
        except duckdb.Error as exc:
            self.write_failed(exc)
            kind = PoolFull if isinstance(exc, duckdb.OutOfMemoryException) else StoreError
            raise kind(f"{self.path}: database write failed: {first_line(exc)}") from exc
        except StoreError as exc:
            self.write_failed(exc)
            raise

    return wrapper


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK on any exception, which then propagates unchanged: a
    rollback that fails too (the database invalidated) must not replace the real cause."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def registered(conn: duckdb.DuckDBPyConnection, **tables: Any) -> Iterator[None]:
    """Arrow tables visible to SQL by name for the duration of the block.

    When the block fails inside a transaction, DuckDB refuses ``unregister`` until the
    rollback; that second error must not hide the first, so it is ignored (registering the
    name again later replaces the table).
    """
    for name, table in tables.items():
        conn.register(name, table)
    try:
        yield
    except BaseException:
        for name in tables:
            with suppress(duckdb.TransactionException):
                conn.unregister(name)
        raise
    for name in tables:
        conn.unregister(name)


# The buffer pool's default cap (database.memory_limit). Any query over more history than this
# fills the pool with the blocks it read and keeps them until something needs the room, so the
# cap bounds what a large history adds to the pool (DuckDB's table metadata, the row groups a
# query touched, lives outside it). Lower starves the writes: at 32MB, with a million stored
# runs, 14 polls failed while the named reports ran, and `source_health` ran out of memory
# beside the polls even on a new database. Reports that need more spill to disk.
MEMORY_LIMIT = "48MB"

# DuckDB keeps up to this much freed memory in its allocator before handing it back to the
# system; its default, 128 MiB, is more than the whole buffer pool here, so after one large
# report the process kept tens of MB it no longer used. Its allocator's background threads
# return what stays freed while the process waits between polls, not only at the next
# allocation: with 100 million stored runs the peak was 7 to 9 MB lower, empty the same.
ALLOCATOR: dict[str, str | bool] = {
    "allocator_flush_threshold": "8MB",
    "allocator_background_threads": True,
}


def connect(
    path: Path, read_only: bool, settings: dict[str, str | bool | int | float | list[str]]
) -> duckdb.DuckDBPyConnection:
    try:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(str(path), read_only=read_only, config={**ALLOCATOR, **settings})
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the database directory: {exc.strerror}") from None
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseLocked(
                f"{path}: the database is locked by another process: {first_line(exc)}"
            ) from None
        raise StoreError(f"{path}: cannot open the database: {first_line(exc)}") from None
    except duckdb.Error as exc:
        raise StoreError(f"{path}: not a usable DuckDB database: {first_line(exc)}") from None
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The database's schema version; 0 for a new file."""
    try:
        version = scalar(conn, "SELECT max(version) FROM schema_migrations")
    except duckdb.CatalogException:
        return 0
    return int(version) if version is not None else 0


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> Any:
    """One value, read to the end: a half-read result (fetchone) keeps the cursor busy and its
    transaction open, which blocks a later register() or CHECKPOINT."""
    rows = conn.execute(sql, params).fetchall()
    return rows[0][0] if rows else None


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
