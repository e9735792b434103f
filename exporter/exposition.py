"""Rendering /metrics off the request path.

With a thousand sources the generation histograms alone are tens of thousands of series; building
and formatting them takes far longer than a scrape should wait. So the registry is collected once
per refresh on a worker thread, encoded in both formats and compressed, and a scrape is served
those bytes. A refresh happens when the store has changed (after at most ``refresh_seconds``), and
at least every ``max_age_seconds`` so the exporter's own counters stay current. The exposition is
therefore at most ``refresh_seconds`` behind the store, which is far below any poll interval.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    content_type: str
    body: bytes
    gzipped: bytes


@dataclass(frozen=True)
class Snapshot:
    text: Rendered
    openmetrics: Rendered
    rendered_at: float
    seconds: float


class _Frozen(Collector):
    """The families of one collect(), so both encoders see the same data for one query cost."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(registry: CollectorRegistry) -> Snapshot:
    started = time.perf_counter()
    frozen = _Frozen(registry.collect())
    text = generate_latest(frozen)
    om: bytes = openmetrics_latest(frozen)  # type: ignore[no-untyped-call]  # untyped upstream
    return Snapshot(
        text=Rendered(CONTENT_TYPE_PLAIN_0_0_4, text, gzip.compress(text, compresslevel=5)),
        openmetrics=Rendered(OPENMETRICS_TYPE, om, gzip.compress(om, compresslevel=5)),
        rendered_at=time.monotonic(),
        seconds=time.perf_counter() - started,
    )


class ExpositionCache:
    def __init__(
        self,
        registry: CollectorRegistry,
        version: Callable[[], int],
        *,
        refresh_seconds: float,
        max_age_seconds: float = 60.0,
    ) -> None:
        self.registry = registry
        self.version = version
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self._snapshot: Snapshot | None = None
        self._rendered_version = -1
        self._lock = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        """The latest rendering; the first call renders synchronously."""
        with self._lock:
            if self._snapshot is None:
                self._rendered_version = self.version()
                self._snapshot = render(self.registry)
            return self._snapshot

    def rendered_version(self) -> int:
        return self._rendered_version

    def refresh(self) -> None:
        version = self.version()
        snap = render(self.registry)
        with self._lock:
            self._snapshot, self._rendered_version = snap, version
        log.debug("rendered /metrics in %.3fs (%d bytes)", snap.seconds, len(snap.text.body))

    async def run(self) -> None:
        """Re-render when the store changed or the rendering got old; forever."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            current = self._snapshot
            stale = current is None or time.monotonic() - current.rendered_at > self.max_age_seconds
            if stale or self.version() != self._rendered_version:
                await asyncio.to_thread(self.refresh)
