"""Batching the pages of concurrent polls into one store transaction each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from exporter.errors import StoreError
from exporter.models import SourceKey
from exporter.store.db import PoolFull
from exporter.store.ingest import PageIn
from exporter.store.store import Store
from exporter.supervision import Faults, cause

log = logging.getLogger(__name__)


class IngestQueue:
    """Batches the pages of concurrent polls into one transaction per batch.

    A transaction has a fixed cost (about a dozen statements and the WAL commit: ~40 ms
    measured for one page of 200 runs) that dwarfs writing a few changed runs, so a batch waits
    up to ``linger_seconds`` for more pages before it is written. At the real polling rate
    (1,000 sources every 60 s: a page every 60 ms) that makes batches of about eight pages
    instead of one, and a burst of first polls goes in 64 pages at a time. The queue holds at most
    ``max_pages``; a poll with a page beyond that waits to hand it over, which bounds the parsed
    pages held in memory however slow the disk. Each poll still learns its own outcome.

    A batch that ran out of DuckDB's memory is written again after each pause of
    ``retry_seconds`` (the batch was rolled back, so nothing is written twice): the pool is
    shared with reports, and a report over a long period can hold most of it for seconds. Its
    polls fail only if the last try fails too.
    """

    def __init__(
        self,
        store: Store,
        stale_after: timedelta,
        *,
        max_pages: int = 64,
        linger_seconds: float = 0.5,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        faults: Faults | None = None,
        retry_seconds: Sequence[float] = (1.0, 2.0, 4.0),
    ) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.stale_after = stale_after
        self.max_pages = max_pages
        self.linger_seconds = linger_seconds
        self.retry_seconds = tuple(retry_seconds)
        self._now = now
        self._queue: asyncio.Queue[tuple[PageIn, asyncio.Future[int]]] = asyncio.Queue(
            maxsize=max_pages
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> asyncio.Task[None]:
        """The task that writes the batches (started by the first ``put`` if not before)."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="ingest")
        return self._task

    async def put(self, page: PageIn) -> int:
        """Store ``page``; returns how many of its source's runs were flagged stale."""
        self.start()
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
        """For ever: a failed batch is rolled back and each of its polls learns why (and
        reports ``reason="store"``); the next batch is tried as usual."""
        while True:
            batch = await self._batch()
            pages = [page for page, _ in batch]
            try:
                marked = await self._write(pages)
            except StoreError as exc:
                self._fail(batch, exc)
                continue
            except Exception as exc:
                # A bug, not the database: counted once here; each poll reports it as `store`.
                self.faults.failed("ingest", exc, "writing a batch failed")
                self._fail(batch, StoreError(f"writing the batch failed: {cause(exc)}"))
                continue
            self.batches += 1
            for page, done in batch:
                if not done.done():
                    done.set_result(marked.get(page.key, 0))

    async def _write(self, pages: list[PageIn]) -> dict[SourceKey, int]:
        for pause in self.retry_seconds:
            try:
                return await self._ingest(pages)
            except PoolFull as exc:
                log.warning("writing %d pages: %s; trying again in %g s", len(pages), exc, pause)
                await asyncio.sleep(pause)
        return await self._ingest(pages)

    async def _ingest(self, pages: list[PageIn]) -> dict[SourceKey, int]:
        return await self.store.call(
            self.store.ingest, pages, now=self._now(), stale_after=self.stale_after
        )

    @staticmethod
    def _fail(batch: list[tuple[PageIn, asyncio.Future[int]]], exc: Exception) -> None:
        for _, done in batch:
            if not done.done():
                done.set_exception(exc)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
