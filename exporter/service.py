"""Wiring the long-running exporter (``run``) and the one-shot pass (``collect``) together.

Start order is store, client, poller, HTTP server, scheduler; stop order is the reverse, so no
poll ever writes to a closed store and the last thing done is a checkpoint of the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
from prometheus_client import CollectorRegistry

from exporter import heap
from exporter.budget import Budgets
from exporter.client import SynthbrewClient
from exporter.config import Config, ConfigError
from exporter.errors import NotConfigured
from exporter.export import ExportResult, export_parquet
from exporter.exposition import ExpositionCache
from exporter.httpserver import (
    EmbeddedServer,
    address,
    bind,
    make_server,
    on_reload_signal,
    on_stop_signals,
)
from exporter.metrics import SourceNames, store_metrics
from exporter.pages import Catalog, page_routes
from exporter.poller import Poller, PollResult, poll_all
from exporter.reports import Report, ReportResult, find_report, load_reports, run_report
from exporter.scheduler import PollScheduler
from exporter.selfmetrics import ApiKeys, ExporterStats
from exporter.sql import run_sql
from exporter.store import IngestQueue, Rollups, Store, StoreError
from exporter.store.db import first_line
from exporter.supervision import Faults, guarded, until_stopped
from exporter.targets import Target, find_target, targets
from exporter.web import SourceStatus, build_app

log = logging.getLogger(__name__)


@dataclass
class Exporter:
    config: Config
    store: Store
    client: SynthbrewClient
    poller: Poller
    registry: CollectorRegistry
    stats: ExporterStats
    targets: Sequence[Target]
    queue: IngestQueue
    faults: Faults
    scheduler: PollScheduler | None = field(default=None)
    exposition: ExpositionCache | None = field(default=None)
    _ready_at_version: int | None = field(default=None)

    def version(self) -> int:
        """Grows whenever something /metrics shows may have changed: a commit or a poll."""
        return self.queue.batches + self.poller.polls_done

    def reports(self) -> list[Report]:
        return list(load_reports(self.config.reports.queries_dir).values())

    def run_report(self, name: str, params: Mapping[str, str]) -> ReportResult:
        report = find_report(load_reports(self.config.reports.queries_dir), name)
        return self.query(report, params)

    def query(self, report: Report, params: Mapping[str, str]) -> ReportResult:
        """``report`` with ``params`` (text, as typed) on a reader cursor."""
        return run_report(self.store.cursor(), report, report.bind(params))

    def catalog(self) -> Catalog:
        billing = self.config.billing
        projects = {p.name: tuple(s.name for s in p.sources) for p in self.config.projects}
        return Catalog(
            timezone=billing.timezone,
            projects=projects,
            included_rows=billing.included_rows,
            price_per_1000_rows=billing.price_per_1000_rows,
            currency=billing.currency,
        )

    def run_sql(self, sql: str) -> ReportResult:
        """One ad-hoc query (see ``exporter.sql``), bounded by the ``reports.sql_*`` settings."""
        limits = self.config.reports
        return run_sql(
            self.store.cursor(),
            sql,
            max_rows=limits.sql_max_rows,
            timeout_seconds=limits.sql_timeout_seconds,
        )

    def export(self) -> ExportResult:
        if self.config.export.path is None:
            raise NotConfigured("export.path is not configured")
        return export_parquet(self.store, self.config.export.path, datetime.now(UTC))

    async def poll_now(self, project: str, source: str) -> dict[str, object]:
        """Poll one source right away (e.g. after `regenerate`), outside its schedule."""
        result = await self.poller.poll(find_target(self.targets, project, source))
        return {"ok": result.ok, "received": result.received, "new": result.new}

    def readiness(self) -> str | None:
        """Why the exporter is not ready, or None: every source polled once and /metrics
        showing what those polls stored, the store taking writes, the rendering fresh."""
        if self.scheduler is None or self.exposition is None or not self.scheduler.all_polled:
            return "waiting for every source's first poll"
        if self._ready_at_version is None:
            self._ready_at_version = self.version()
        if self.exposition.rendered_version() < self._ready_at_version:
            return "waiting for /metrics to show the first polls"
        failing = self.store.health
        if failing.failing_since is not None:
            return f"the store cannot be written: {failing.last_error}"
        return self.exposition.stale()

    def store_problem(self) -> str | None:
        """The store's last write error while writes fail, for the landing page."""
        health = self.store.health
        return health.last_error if health.failing_since is not None else None

    def sources(self) -> list[SourceStatus]:
        """What the landing page shows; called on a worker thread (it reads the store). The
        outcome of the last poll is this process's own (the store may be what failed); the
        database only fills in what this process has not seen, and is skipped if unreadable."""
        try:
            states, counts = self.store.poll_states(), self.store.event_counts()
        except (StoreError, duckdb.Error) as exc:
            log.debug("landing page without the store: %s", exc)
            states, counts = {}, {}
        out = []
        for t in self.targets:
            state = states.get(t.key)
            polled = self.poller.state(t)
            last, plan = polled.last, polled.plan
            out.append(
                SourceStatus(
                    project=t.project.name,
                    source=t.source.name,
                    project_id=str(t.project.id),
                    source_id=str(t.source.id),
                    last_poll_at=state.last_poll_at if state else None,
                    outcome=("success" if last.ok else "error")
                    if last
                    else (state.last_outcome if state else None),
                    error_reason=last.reason
                    if last
                    else (state.last_error_reason if state else None),
                    error_message=last.message
                    if last
                    else (state.last_error_message if state else None),
                    events_stored=counts.get(t.key, 0),
                    interval_seconds=plan.interval_seconds,
                    page_limit=plan.limit,
                )
            )
        return out


def _settle_gc() -> None:
    """Keep the cyclic GC off what lives as long as the process, and run it less often.

    Polls allocate many short-lived objects (parsed events, requests); with the default
    thresholds the garbage collector re-walked the startup objects (config, targets, metric
    children, windows) over and over. Measured on a warm pass over 1,000 sources: 0.3 s of 3.4 s.
    Undone on the way out (``gc.unfreeze``), so shutdown still frees everything.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def open_store(config: Config) -> Store:
    """The configured database, its rollups kept in the configured buckets and timezone."""
    db = config.database
    rollups = Rollups(tuple(config.metrics.duration_buckets), config.billing.timezone)
    return Store(db.path, memory_limit=db.memory_limit, threads=db.threads, rollups=rollups)


def metrics_registry(
    config: Config,
    store: Store,
    faults: Faults,
    budgets: Budgets,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[CollectorRegistry, ExporterStats]:
    """Every collector /metrics shows, in the order it shows them; the golden exposition
    test builds its registry with this too."""
    registry = CollectorRegistry()
    stats = ExporterStats(registry)
    registry.register(faults)
    names = {t.key: SourceNames(*t.labels) for t in targets(config)}
    registry.register(store_metrics(store, names, config.billing, faults, now))
    registry.register(ApiKeys(budgets))
    return registry, stats


@asynccontextmanager
async def open_exporter(config: Config) -> AsyncIterator[Exporter]:
    store = await asyncio.to_thread(open_store, config)
    try:
        faults = Faults()
        budgets = config.budgets()
        registry, stats = metrics_registry(config, store, faults, budgets)
        all_targets = targets(config)
        await store.call(
            store.sync_sources, [(t.project.id, t.source.id, *t.labels) for t in all_targets]
        )
        queue = IngestQueue(
            store, timedelta(seconds=config.collector.stale_after_seconds), faults=faults
        )
        async with SynthbrewClient(config.api, budgets=budgets) as client:
            poller = Poller(config, client, store, queue, stats)
            await asyncio.to_thread(poller.warm_start, all_targets)
            _settle_gc()
            try:
                yield Exporter(
                    config, store, client, poller, registry, stats, all_targets, queue, faults
                )
            finally:
                await queue.aclose()
    finally:
        gc.unfreeze()
        await asyncio.to_thread(store.close)


async def collect(config: Config, on_done: Callable[[PollResult], object]) -> list[PollResult]:
    async with heap.trimmed(), open_exporter(config) as exporter:
        return await poll_all(exporter.poller, exporter.targets, on_done)


async def run(
    config: Config,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], object] = lambda _: None,
    reload: Callable[[], Config] | None = None,
    serving: Callable[[str], object] = lambda _: None,
) -> None:
    """Poll on schedule and serve HTTP until SIGINT/SIGTERM (or ``stop``), then shut down.
    ``serving`` is told the exporter's URL once it answers, after its own announcements.
    SIGHUP applies ``reload()``'s ``database.memory_limit``. Raises TaskDied when work the
    exporter cannot do without has stopped."""
    stop = stop or asyncio.Event()
    on_stop_signals(stop.set)
    # SIGHUP's default action ends the process: until the exporter is up, it is only noted.
    on_reload_signal(lambda: log.warning("SIGHUP while starting: ignored, send it again"))
    sock = bind(config.server.listen)
    try:
        async with heap.trimmed(), open_exporter(config) as exporter:
            if reload is not None:
                _reload_on_hup(exporter, reload)
            exporter.stats.watch_loop(asyncio.get_running_loop())
            exporter.exposition = ExpositionCache(
                exporter.registry,
                exporter.version,
                refresh_seconds=config.metrics.refresh_seconds,
                faults=exporter.faults,
            )
            await asyncio.to_thread(exporter.exposition.refresh)
            refresher = asyncio.create_task(exporter.exposition.run(), name="exposition")
            web = _web_server(exporter, exporter.exposition)
            web_task = asyncio.create_task(web.serve(sockets=[sock]), name="http")
            url = f"{'https' if config.server.tls_server_config else 'http'}://{address(sock)}"
            announce(f"usage:      {url}/usage")
            announce(f"exporter:   {url}/  (metrics: {url}/metrics, ready: {url}/readyz)")
            announce(f"reports:    {url}/reports  (or: synthbrew-exporter report --url {url})")
            serving(url)
            exporter.scheduler = PollScheduler(exporter.poller, exporter.targets, exporter.faults)
            export = config.export
            if export.path is not None and export.interval_seconds is not None:
                exporter.scheduler.every(
                    "export", export.interval_seconds, lambda: asyncio.to_thread(exporter.export)
                )
            exporter.scheduler.start()
            try:
                await until_stopped(stop, [refresher, web_task, exporter.queue.start()])
            finally:
                log.info("stopping: no new polls")
                abandoned = await exporter.scheduler.stop(config.collector.shutdown_grace_seconds)
                if abandoned:
                    log.warning("%d poll(s) did not finish within the grace period", abandoned)
                web.should_exit = True
                refresher.cancel()
                await asyncio.gather(web_task, refresher, return_exceptions=True)
    finally:
        sock.close()
    log.info("stopped cleanly")


def _web_server(exporter: Exporter, exposition: ExpositionCache) -> EmbeddedServer:
    server = exporter.config.server
    tls = server.tls_server_config
    pages = page_routes(exporter, exporter.catalog(), lambda: datetime.now(UTC))
    app = build_app(exposition, exporter, exporter, server.basic_auth_users, pages)
    return make_server(
        app,
        ssl_certfile=str(tls.cert_file) if tls else None,
        ssl_keyfile=str(tls.key_file) if tls else None,
    )


_reloads: set[asyncio.Task[object]] = set()  # held until done: the loop keeps weak refs


def _reload_on_hup(exporter: Exporter, reload: Callable[[], Config]) -> None:
    def on_hup() -> None:
        work = _reload(exporter, reload)
        task = asyncio.create_task(
            guarded(work, exporter.faults, "reload", "reloading the config failed"),
            name="reload",
        )
        _reloads.add(task)
        task.add_done_callback(_reloads.discard)

    on_reload_signal(on_hup)


async def _reload(exporter: Exporter, reload: Callable[[], Config]) -> None:
    """Re-read the config on SIGHUP: ``database.memory_limit`` takes effect at once; any other
    change is named, and needs a restart."""
    try:
        new = reload()
    except ConfigError as exc:
        log.error("config not reloaded, the running one stays: %s", exc)
        return
    old = exporter.config
    limit = new.database.memory_limit
    if limit != old.database.memory_limit:
        try:
            await asyncio.to_thread(exporter.store.set_memory_limit, limit)
        except duckdb.Error as exc:
            # e.g. below what DuckDB holds right now and cannot free
            log.error(
                "database.memory_limit stays %s: %s", old.database.memory_limit, first_line(exc)
            )
            limit = old.database.memory_limit
        else:
            log.info("database.memory_limit: %s -> %s", old.database.memory_limit, limit)
    before = old.model_dump(mode="json", exclude={"database": {"memory_limit"}})
    after = new.model_dump(mode="json", exclude={"database": {"memory_limit"}})
    changed = sorted(
        f"{section}.{key}" if isinstance(value, dict) else section
        for section, value in after.items()
        for key in (value if isinstance(value, dict) else [None])
        if (before[section].get(key) if isinstance(value, dict) else before[section])
        != (value[key] if isinstance(value, dict) else value)
    )
    if changed:
        log.warning("changed in the config, applied at the next restart: %s", ", ".join(changed))
    memory = old.database.model_copy(update={"memory_limit": limit})
    exporter.config = old.model_copy(update={"database": memory})
