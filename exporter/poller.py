"""Polling sources into the store: fetch a page, validate it, upsert it, detect gaps, record
the outcome, and remember what the next poll of the source needs (:class:`SourceState`).

What the next poll looks like is decided by :mod:`exporter.next_poll` from what this one saw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from uuid import UUID

from exporter.client import SynthbrewClient, UpstreamError
from exporter.config import Config
from exporter.models import EventPage, SourceKey
from exporter.next_poll import Plan, plan_next
from exporter.selfmetrics import ExporterStats
from exporter.store import IngestQueue, PageIn, Store, StoreError
from exporter.targets import Target
from exporter.window import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollResult:
    target: Target
    ok: bool
    duration_seconds: float
    plan: Plan
    reason: str | None = None
    message: str | None = None
    requested: int = 0
    received: int = 0
    new: int = 0
    invalid: int = 0
    possible_gap: bool = False


@dataclass
class SourceState:
    """What the poller remembers of one source between its polls.

    ``window`` is the source's last page. The list is newest first with no cursor, so an event
    of a new page was stored before exactly when the last page had it, or when the last page has
    an event older than it; comparing with the last page is enough, and needs no database read
    per poll. Its fingerprints let a finished run that has not changed skip the write.
    """

    plan: Plan
    polled_before: bool = False
    window: Window = field(default_factory=Window)
    last: PollResult | None = None


class Poller:
    """Polls sources into the store, one :class:`SourceState` per source."""

    def __init__(
        self,
        config: Config,
        client: SynthbrewClient,
        store: Store,
        queue: IngestQueue,
        stats: ExporterStats,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.queue = queue
        self.stats = stats
        self._now = now
        self._states: dict[SourceKey, SourceState] = {}
        self.polls_done = 0

    def warm_start(self, all_targets: Sequence[Target]) -> None:
        """Resume each source's plan, last window and "first poll done" from the store after
        a restart."""
        full = self.config.collector.page_limit
        # The windows query runs in DuckDB, without the GIL, while this thread creates the
        # metric series: the two take ~0.1 s each for 1,000 sources.
        with ThreadPoolExecutor(1, thread_name_prefix="warm-start") as pool:
            pending = pool.submit(self.store.windows, full)
            for target in all_targets:
                self.stats.register_source(*target.labels)
            stored = self.store.poll_states()
            windows = pending.result()
        for target in all_targets:
            row = stored.get(target.key)
            state = SourceState(
                Plan(full, target.interval_seconds), window=windows.get(target.key, Window())
            )
            if row is not None:
                state.polled_before = row.successful_polls > 0
                state.plan = Plan(
                    limit=min(row.page_limit or full, full),
                    interval_seconds=min(
                        row.interval_seconds or target.interval_seconds, target.interval_seconds
                    ),
                )
            self._states[target.key] = state

    def state(self, target: Target) -> SourceState:
        """The source's state; a source never polled nor warm-started begins with a full page
        at its interval."""
        state = self._states.get(target.key)
        if state is None:
            state = SourceState(Plan(self.config.collector.page_limit, target.interval_seconds))
            self._states[target.key] = state
        return state

    async def poll(self, target: Target) -> PollResult:
        started = time.perf_counter()
        state = self.state(target)
        plan = state.plan
        try:
            result = await self._poll(target, state, started)
        except UpstreamError as exc:
            # One line a minute per kind of upstream failure, however many sources share it.
            log.warning(
                "poll %s failed (%s): %s",
                target.name,
                exc.reason,
                exc,
                extra={"repeat_key": f"upstream {exc.reason}"},
            )
            result = self._failed(target, plan, started, exc.reason, str(exc))
        except StoreError as exc:
            log.error("poll %s: %s", target.name, exc, extra={"repeat_key": str(exc)})
            result = self._failed(target, plan, started, "store", str(exc))
        state.plan = result.plan
        state.last = result
        if not result.ok:
            await self._record_failure(result)
        self._observe(result)
        return result

    async def _record_failure(self, result: PollResult) -> None:
        try:
            await self.store.call(
                self.store.record_failure,
                *result.target.key,
                now=self._now(),
                reason=result.reason or "",
                message=result.message or "",
            )
        except StoreError as exc:
            log.error(
                "poll %s: could not record the outcome: %s",
                result.target.name,
                exc,
                extra={"repeat_key": f"outcome {exc}"},
            )

    def _failed(
        self, target: Target, plan: Plan, started: float, reason: str, message: str
    ) -> PollResult:
        return PollResult(
            target=target,
            ok=False,
            duration_seconds=time.perf_counter() - started,
            plan=replace(plan, limit=self.config.collector.page_limit),
            reason=reason,
            message=message,
        )

    async def _poll(self, target: Target, state: SourceState, started: float) -> PollResult:
        """Fetch, plan the next poll, then commit the page and this poll's outcome together."""
        cfg = self.config.collector
        plan = state.plan
        requested = plan.limit
        page = await self._fetch(target, requested)
        known = _known(state.window, page)
        if requested < cfg.page_limit and page.raw_count >= requested and known == 0:
            # The small page was all new, so more may hide behind it: take the full window.
            requested = cfg.page_limit
            page = await self._fetch(target, requested)
            known = _known(state.window, page)
        full_window = requested == cfg.page_limit
        first = not state.polled_before
        new = len({e.id for e in page.events}) - known
        if first:
            # Everything is new to a first poll; what tells how busy the source is, is how
            # many of its events were queued within one interval of its newest.
            new = _recent(page, target.interval_seconds)
        next_plan = self._next_plan(target, plan, page, requested, new, first)
        await self.queue.put(
            PageIn(
                *target.key,
                page.events,
                full_window=full_window,
                next_limit=next_plan.limit,
                next_interval=next_plan.interval_seconds,
                unchanged=_unchanged(state.window, page),
            )
        )
        gap = not first and full_window and page.raw_count >= requested and known == 0
        state.polled_before = True
        state.window = Window((e.id, e.fingerprint) for e in page.events)
        _warn_about(target, page, gap)
        return PollResult(
            target=target,
            ok=True,
            duration_seconds=time.perf_counter() - started,
            plan=next_plan,
            requested=requested,
            received=page.raw_count,
            new=new,
            invalid=len(page.invalid),
            possible_gap=gap,
        )

    def _next_plan(
        self, target: Target, plan: Plan, page: EventPage, requested: int, new: int, first: bool
    ) -> Plan:
        # A run that is unfinished and no longer in the window is the stale check's
        # business, not a reason to read the full window again.
        unfinished = [i for i, e in enumerate(page.events) if not e.is_finished]
        newest = max((e.updated_at or e.created_at for e in page.events), default=None)
        idle = (self._now() - newest).total_seconds() if newest else float("inf")
        return plan_next(
            self.config.collector,
            target.interval_seconds,
            plan,
            requested=requested,
            received=page.raw_count,
            new=new,
            deepest_in_flight=unfinished[-1] if unfinished else None,
            first=first,
            idle_seconds=idle,
        )

    async def _fetch(self, target: Target, limit: int) -> EventPage:
        return await self.client.list_generation_events(
            *target.key, api_key=target.api_key, limit=limit
        )

    def _observe(self, result: PollResult) -> None:
        self.polls_done += 1
        self.stats.record_poll(
            result.target.labels,
            ok=result.ok,
            seconds=result.duration_seconds,
            reason=result.reason,
            invalid=result.invalid,
            possible_gap=result.possible_gap,
        )


def _warn_about(target: Target, page: EventPage, gap: bool) -> None:
    if gap:
        log.warning(
            "poll %s: a full page of %d events, none seen before: older events may have"
            " been missed; polling sooner",
            target.name,
            page.raw_count,
        )
    if page.invalid:
        bad = page.invalid[0]
        log.warning(
            "poll %s: skipped %d invalid event(s); first: %s: %s",
            target.name,
            len(page.invalid),
            bad.event_id,
            bad.error,
        )


def _unchanged(last: Window, page: EventPage) -> frozenset[UUID]:
    """Finished runs stored exactly as the page shows them. A run in flight is always written:
    its ``last_seen_at`` is what tells a stale run from a live one."""
    return frozenset(
        e.id for e in page.events if e.is_finished and last.unchanged(e.id, e.fingerprint)
    )


def _known(last: Window, page: EventPage) -> int:
    """How many of the page's events were stored before (see :class:`SourceState`)."""
    return sum(1 for e in {ev.id for ev in page.events} if last.has(e))


def _recent(page: EventPage, seconds: float) -> int:
    if not page.events:
        return 0
    newest = max(e.queued_at for e in page.events)
    return sum(1 for e in page.events if (newest - e.queued_at).total_seconds() <= seconds)


async def poll_all(
    poller: Poller,
    all_targets: Sequence[Target],
    on_done: Callable[[PollResult], object] = lambda _: None,
) -> list[PollResult]:
    """Poll every target once, concurrently; the client's semaphore bounds requests in flight."""

    async def one(target: Target) -> PollResult:
        result = await poller.poll(target)
        on_done(result)
        return result

    return list(await asyncio.gather(*(one(t) for t in all_targets)))
