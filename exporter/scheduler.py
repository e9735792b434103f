"""Polling every source on its own schedule, and stopping without losing work.

APScheduler 3's AsyncIOScheduler runs one job per source (``max_instances=1``, coalescing), first
runs spread across the interval by a stable hash so a thousand sources don't fire together. On
stop, its executor would cancel running coroutine jobs; polls therefore run as tasks of our own,
shielded from that cancellation, and :meth:`PollScheduler.stop` waits for them (bounded).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.poller import Poller
from exporter.supervision import Faults, guarded
from exporter.targets import Target

log = logging.getLogger(__name__)


def start_offset(target: Target, interval: float) -> float:
    """Seconds after start-up of a source's first poll: stable across restarts, spread evenly."""
    digest = hashlib.sha256(f"{target.project.id}/{target.source.id}".encode()).digest()
    return interval * int.from_bytes(digest[:8], "big") / 2**64


class PollScheduler:
    def __init__(
        self, poller: Poller, all_targets: Sequence[Target], faults: Faults | None = None
    ) -> None:
        self.poller = poller
        self.faults = faults or Faults()
        self.targets = list(all_targets)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._in_flight: set[asyncio.Task[object]] = set()
        self.polled: set[tuple[object, object]] = set()

    def start(self) -> None:
        now = datetime.now(UTC)
        for target in self.targets:
            interval = self.poller.state(target).plan.interval_seconds
            self._scheduler.add_job(
                self._run,
                trigger=IntervalTrigger(
                    seconds=interval,
                    start_date=now + timedelta(seconds=start_offset(target, interval)),
                    timezone=UTC,
                ),
                args=[target],
                id=target.name,
                name=f"poll {target.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=now + timedelta(seconds=start_offset(target, interval)),
            )
        self._scheduler.start()
        log.info("scheduler started: %d source(s)", len(self.targets))

    def every(
        self, name: str, seconds: float, func: Callable[[], Coroutine[Any, Any, object]]
    ) -> None:
        """A housekeeping job (e.g. the Parquet export) beside the polls; a failed turn is
        logged and counted under task ``name``, and the next turn comes on schedule."""

        # A coroutine function: APScheduler awaits only those (a lambda returning a coroutine
        # would be called on a worker thread and its coroutine never run).
        async def turn() -> None:
            await guarded(func(), self.faults, name, f"{name} failed")

        self._scheduler.add_job(
            turn,
            trigger=IntervalTrigger(seconds=seconds, timezone=UTC),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
        )

    @property
    def all_polled(self) -> bool:
        return len(self.polled) == len(self.targets)

    async def _run(self, target: Target) -> None:
        before = self.poller.state(target).plan.interval_seconds
        task = asyncio.create_task(self.poller.poll(target), name=f"poll {target.name}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # APScheduler cancels running jobs when it shuts down. The poll itself is shielded
            # and stop() waits for it, so only this wrapper ends, quietly.
            return
        except Exception as exc:
            # Upstream and store failures are a poll's outcome; anything else is a bug, which
            # must not stop this source's schedule.
            self.faults.failed("poll", exc, f"poll {target.name}")
            return
        finally:
            self.polled.add(target.key)
        after = self.poller.state(target).plan.interval_seconds
        if after != before and self._scheduler.running:
            log.info("poll %s: interval %.1fs -> %.1fs", target.name, before, after)
            self._scheduler.reschedule_job(
                target.name, trigger=IntervalTrigger(seconds=after, timezone=UTC)
            )

    async def stop(self, grace_seconds: float) -> int:
        """Start no new poll, let running ones finish (up to ``grace_seconds``).

        Returns how many polls were still running when the grace ran out; those are cancelled,
        which is safe: a page is committed in one transaction or not at all.
        """
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        pending = set(self._in_flight)
        if not pending:
            return 0
        log.info("waiting up to %.0fs for %d poll(s) in flight", grace_seconds, len(pending))
        _, still = await asyncio.wait(pending, timeout=grace_seconds)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)
        return len(still)
