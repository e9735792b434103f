"""One poll of one source: fetch, validate, upsert, detect gaps, record the outcome.

The upstream has no cursor, only the newest ``limit`` events, so each poll also decides how the
next one should look (:func:`plan_next`): sooner when the window overflows, a small page when the
source is quiet and nothing in flight needs the full window, and when it should come
(:func:`poll_interval`). The rule sits beside the poll that feeds it; moving it out with the
per-source state is part of issue 19's renaming of this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID

from pydantic import SecretStr

from exporter.client import SynthbrewClient, UpstreamError
from exporter.config import CollectorConfig, Config, ProjectConfig, SourceConfig
from exporter.models import EventPage
from exporter.selfmetrics import ExporterStats
from exporter.sharding import Shard
from exporter.store import IngestQueue, PageIn, Store, StoreError
from exporter.window import Window

log = logging.getLogger(__name__)
_EMPTY = Window()


@dataclass(frozen=True)
class Target:
    """A configured source, with everything needed to poll it."""

    project: ProjectConfig
    source: SourceConfig
    api_key: SecretStr
    interval_seconds: float

    @property
    def key(self) -> tuple[UUID, UUID]:
        return self.project.id, self.source.id

    @property
    def labels(self) -> tuple[str, str]:
        return self.project.name, self.source.name

    @property
    def name(self) -> str:
        return f"{self.project.name}/{self.source.name}"


def targets(config: Config, *, every_shard: bool = False) -> list[Target]:
    """This replica's sources: all of them, or its shard's share (``collector.shard``)."""
    shard = Shard(0, 1) if every_shard else Shard.parse(config.collector.shard)
    return [
        Target(
            project=project,
            source=source,
            api_key=config.api_key_for(project),
            interval_seconds=source.interval_seconds or config.collector.interval_seconds,
        )
        for project in config.projects
        for source in project.sources
        if shard.owns(source.id)
    ]


@dataclass(frozen=True)
class Plan:
    """How the next poll of a source should look."""

    limit: int
    interval_seconds: float


IDLE_DIVISOR = 10.0


def poll_interval(
    cfg: CollectorConfig,
    base: float,
    current: float,
    *,
    overflowing: bool,
    in_flight: bool,
    idle_seconds: float | None,
) -> float:
    """Seconds until a source's next poll: the rule documented in the README under "Adaptive
    polling", case by case.

    1. Overflowing: half the current interval, not below ``min_interval_seconds``. Half a window
       or more arrived since the last poll, and without a cursor what falls out is lost.
    2. A run in flight: at most ``in_flight_interval_seconds`` (default: the interval), so its
       end is stored soon after it happens.
    3. Idle (nothing in flight, the newest change ``idle_seconds`` ago): a tenth of the idle
       time, from the interval up to ``max_interval_seconds`` (unset: the interval, so this
       case is off). A source quiet for an hour is polled every six minutes, one that ran a
       minute ago every minute.
    4. Otherwise the interval, reached by doubling after an overflow shortened it.
    """
    if overflowing:
        return max(cfg.min_interval_seconds, current / 2)
    calm = min(base, current * 2)
    if in_flight:
        return min(calm, cfg.in_flight_interval_seconds or base)
    ceiling = cfg.max_interval_seconds or base
    if idle_seconds is not None and ceiling > base:
        return max(calm, min(ceiling, idle_seconds / IDLE_DIVISOR))
    return calm


def plan_next(
    cfg: CollectorConfig,
    base_interval: float,
    current: Plan,
    *,
    requested: int,
    received: int,
    new: int,
    deepest_in_flight: int | None,
    first: bool = False,
    idle_seconds: float | None = None,
) -> Plan:
    """The next poll's page size and interval (:func:`poll_interval`).

    - Overflowing: a full window where at least half the events are new, i.e. more than half a
      window arrived since the last poll. A source's first poll finds everything new and says
      nothing about its rate, so it never counts as overflowing.
    - Quiet (fewer new events than half the small page, and every run in flight among the
      newest half of it, where the next small page will still see it): ask for
      ``quiet_page_limit`` events next time (only when configured); anything else gets the
      full ``page_limit``.
      ``deepest_in_flight`` is the position (0 = newest) of the oldest unfinished run in the
      page, or None when every run in it has finished.
    """
    full = cfg.page_limit
    overflowing = not first and requested == full and received >= full and new * 2 >= full
    interval = poll_interval(
        cfg,
        base_interval,
        current.interval_seconds,
        overflowing=overflowing,
        in_flight=deepest_in_flight is not None,
        idle_seconds=idle_seconds,
    )
    if cfg.quiet_page_limit is None:
        return Plan(limit=full, interval_seconds=interval)
    small = min(cfg.quiet_page_limit, full)
    in_flight_visible = deepest_in_flight is None or deepest_in_flight * 2 < small
    quiet = in_flight_visible and new * 2 < small
    return Plan(limit=small if quiet else full, interval_seconds=interval)


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
    stale_marked: int = 0


class Collector:
    """Polls sources into the store. Holds each source's adaptive plan between polls."""

    def __init__(
        self,
        config: Config,
        client: SynthbrewClient,
        store: Store,
        writer: IngestQueue,
        stats: ExporterStats,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.writer = writer
        self.stats = stats
        self._now = now
        self.plans: dict[tuple[UUID, UUID], Plan] = {}
        self._polled_before: set[tuple[UUID, UUID]] = set()
        # Each source's last page. The list is newest first with no cursor, so an event of a new
        # page was stored before exactly when the last page had it, or when the last page has an
        # event older than it; comparing with the last page is enough, and needs no database
        # read per poll. Its fingerprints let a finished run that has not changed skip the write.
        self._last_window: dict[tuple[UUID, UUID], Window] = {}
        self.last_results: dict[tuple[UUID, UUID], PollResult] = {}
        self.polls_done = 0

    def warm_start(self, all_targets: Sequence[Target]) -> None:
        """Resume each source's plan and "first poll done" from the store after a restart."""
        full = self.config.collector.page_limit
        # The windows query runs in DuckDB, without the GIL, while this thread creates the
        # metric series: the two take ~0.1 s each for 1,000 sources.
        with ThreadPoolExecutor(1, thread_name_prefix="warm-start") as pool:
            windows = pool.submit(self.store.windows, full)
            for target in all_targets:
                self.stats.register_source(*target.labels)
            states = self.store.poll_states()
            self._last_window = windows.result()
        for target in all_targets:
            state = states.get(target.key)
            limit, interval = full, target.interval_seconds
            if state is not None:
                if state.successful_polls > 0:
                    self._polled_before.add(target.key)
                limit = min(state.page_limit or full, full)
                interval = min(state.interval_seconds or interval, interval)
            self.plans[target.key] = Plan(limit=limit, interval_seconds=interval)

    def plan(self, target: Target) -> Plan:
        return self.plans.get(
            target.key, Plan(self.config.collector.page_limit, target.interval_seconds)
        )

    async def poll(self, target: Target) -> PollResult:
        started = time.perf_counter()
        plan = self.plan(target)
        try:
            result = await self._poll(target, plan, started)
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
        self.plans[target.key] = result.plan
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

    async def _poll(self, target: Target, plan: Plan, started: float) -> PollResult:
        """Fetch, plan the next poll, then commit the page and this poll's outcome together."""
        cfg = self.config.collector
        requested = plan.limit
        page = await self._fetch(target, requested)
        known = self._known(target, page)
        if requested < cfg.page_limit and page.raw_count >= requested and known == 0:
            # The small page was all new, so more may hide behind it: take the full window.
            requested = cfg.page_limit
            page = await self._fetch(target, requested)
            known = self._known(target, page)
        full_window = requested == cfg.page_limit
        first = target.key not in self._polled_before
        new = len({e.id for e in page.events}) - known
        if first:
            # Everything is new to a first poll; what tells how busy the source is, is how
            # many of its events were queued within one interval of its newest.
            new = _recent(page, target.interval_seconds)
        # A run that is unfinished and no longer in the window is the stale check's
        # business, not a reason to read the full window again.
        unfinished = [i for i, e in enumerate(page.events) if not e.is_finished]
        newest = max((e.updated_at or e.created_at for e in page.events), default=None)
        idle = (self._now() - newest).total_seconds() if newest else float("inf")
        next_plan = plan_next(
            cfg,
            target.interval_seconds,
            plan,
            requested=requested,
            received=page.raw_count,
            new=new,
            deepest_in_flight=unfinished[-1] if unfinished else None,
            first=first,
            idle_seconds=idle,
        )
        stale = await self.writer.put(
            PageIn(
                *target.key,
                page.events,
                full_window=full_window,
                next_limit=next_plan.limit,
                next_interval=next_plan.interval_seconds,
                unchanged=self._unchanged(target, page),
            )
        )
        gap = not first and full_window and page.raw_count >= requested and known == 0
        self._polled_before.add(target.key)
        self._last_window[target.key] = Window((e.id, e.fingerprint) for e in page.events)
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
            stale_marked=stale,
        )

    async def _fetch(self, target: Target, limit: int) -> EventPage:
        return await self.client.list_generation_events(
            *target.key, api_key=target.api_key, limit=limit
        )

    def _unchanged(self, target: Target, page: EventPage) -> frozenset[UUID]:
        """Finished runs stored exactly as the page shows them. A run in flight is always
        written: its ``last_seen_at`` is what tells a stale run from a live one."""
        last = self._last_window.get(target.key, _EMPTY)
        return frozenset(
            e.id for e in page.events if e.is_finished and last.unchanged(e.id, e.fingerprint)
        )

    def _known(self, target: Target, page: EventPage) -> int:
        """How many of the page's events were stored before (see ``_last_window``)."""
        last = self._last_window.get(target.key, _EMPTY)
        return sum(1 for e in {ev.id for ev in page.events} if last.has(e))

    def _observe(self, result: PollResult) -> None:
        self.polls_done += 1
        self.last_results[result.target.key] = result
        self.stats.record_poll(
            result.target.labels,
            ok=result.ok,
            seconds=result.duration_seconds,
            reason=result.reason,
            invalid=result.invalid,
            possible_gap=result.possible_gap,
        )


def _recent(page: EventPage, seconds: float) -> int:
    if not page.events:
        return 0
    newest = max(e.queued_at for e in page.events)
    return sum(1 for e in page.events if (newest - e.queued_at).total_seconds() <= seconds)


async def collect_once(
    collector: Collector,
    all_targets: Sequence[Target],
    on_done: Callable[[PollResult], object] = lambda _: None,
) -> list[PollResult]:
    """Poll every target once, concurrently; the client's semaphore bounds requests in flight."""

    async def one(target: Target) -> PollResult:
        result = await collector.poll(target)
        on_done(result)
        return result

    return list(await asyncio.gather(*(one(t) for t in all_targets)))
