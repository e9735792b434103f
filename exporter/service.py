"""Wiring the long-running exporter (``run``) and the one-shot pass (``collect``) together.

Start order is store, client, collector, scheduler; stop order is the reverse, so no poll ever
writes to a closed store and the last thing done is a checkpoint of the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from exporter.client import SynthbrewClient
from exporter.collector import Collector, PollResult, Target, collect_once, targets
from exporter.config import Config
from exporter.httpserver import on_stop_signals
from exporter.scheduler import PollScheduler
from exporter.selfmetrics import ExporterStats
from exporter.store import Store

log = logging.getLogger(__name__)


@dataclass
class Exporter:
    config: Config
    store: Store
    client: SynthbrewClient
    collector: Collector
    registry: CollectorRegistry
    targets: Sequence[Target]


@asynccontextmanager
async def open_exporter(config: Config) -> AsyncIterator[Exporter]:
    store = await asyncio.to_thread(Store, config.database.path)
    try:
        registry = CollectorRegistry()
        stats = ExporterStats(registry)
        async with SynthbrewClient(config.api) as client:
            collector = Collector(config, client, store, stats)
            all_targets = targets(config)
            await asyncio.to_thread(collector.warm_start, all_targets)
            yield Exporter(config, store, client, collector, registry, all_targets)
    finally:
        await asyncio.to_thread(store.close)


async def collect(config: Config, on_done: Callable[[PollResult], object]) -> list[PollResult]:
    async with open_exporter(config) as exporter:
        return await collect_once(exporter.collector, exporter.targets, on_done)


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    """Poll on schedule until SIGINT/SIGTERM (or ``stop`` is set), then shut down gracefully."""
    stop = stop or asyncio.Event()
    on_stop_signals(stop.set)
    async with open_exporter(config) as exporter:
        scheduler = PollScheduler(exporter.collector, exporter.targets)
        scheduler.start()
        await stop.wait()
        log.info("stopping: no new polls")
        abandoned = await scheduler.stop(config.collector.shutdown_grace_seconds)
        if abandoned:
            log.warning("%d poll(s) did not finish within the grace period", abandoned)
    log.info("stopped cleanly")
