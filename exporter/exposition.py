"""Rendering /metrics off the request path.

With a thousand sources the generation histograms alone are well over a hundred thousand
series; building and formatting them takes far longer than a scrape should wait. So the
registry is collected once per refresh on a worker thread, each family is encoded in both
formats as soon as it is built and written straight into gzip streams, and a scrape is served
those compressed bytes (decompressed on the fly for the rare client that does not accept gzip).
Only one family is held at a time and only compressed text is kept: measured with 162,000
series, the previous rendering (every family collected first, both formats kept uncompressed)
held ~40 MB between refreshes and twice that while rendering.

A refresh happens when the store has changed or a poll ended (after at most
``refresh_seconds``), and at least every ``max_age_seconds`` so the process metrics stay current.
The exposition is therefore at most ``refresh_seconds`` behind the store and the poll counters,
which is far below any poll interval. A refresh that fails is logged and counted and the last
rendering is served until one succeeds; ``synthbrew_exporter_last_refresh_timestamp_seconds``
tells a scraper how old it is, and :meth:`ExpositionCache.stale` tells /readyz.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.supervision import Faults

log = logging.getLogger(__name__)
_EOF = b"# EOF\n"


@dataclass(frozen=True)
class Rendered:
    content_type: str
    gzipped: bytes
    size: int

    @property
    def body(self) -> bytes:
        return gzip.decompress(self.gzipped)


@dataclass(frozen=True)
class Snapshot:
    text: Rendered
    openmetrics: Rendered
    rendered_at: float
    seconds: float


class _One(Collector):
    """One family, for the encoders that take a registry."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


def _encode(family: Metric) -> tuple[bytes, bytes]:
    """The family in both formats, OpenMetrics without its closing ``# EOF``."""
    one = _One(family)
    om: bytes = openmetrics_latest(one)  # type: ignore[no-untyped-call]  # untyped upstream
    return generate_latest(one), om.removesuffix(_EOF)


class _Stream:
    def __init__(self, content_type: str) -> None:
        self.content_type = content_type
        self.buffer = io.BytesIO()
        self.gzip = gzip.GzipFile(fileobj=self.buffer, mode="wb", compresslevel=1, mtime=0)
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.gzip.write(chunk)
        self.size += len(chunk)

    def close(self) -> Rendered:
        self.gzip.close()
        return Rendered(self.content_type, self.buffer.getvalue(), self.size)


@runtime_checkable
class Grouped(Protocol):
    """A family that can tell what each source's samples are made of without making them:
    ``(project, source)``, a hash of what determines them, and how to make them."""

    def groups(self) -> Iterator[tuple[tuple[str, str], int, Callable[[], list[Sample]]]]: ...


@dataclass(frozen=True)
class _Chunk:
    """One source's lines of one family, encoded, kept compressed until the next refresh."""

    digest: int  # of the samples it was encoded from
    text: bytes
    openmetrics: bytes


class Renderer:
    """Encodes a registry's families, re-encoding only what changed since the last rendering.

    prometheus_client encodes ~35,000 samples a second in both formats, so a thousand sources'
    160,000 series took 4.5 s on every refresh although a few sources had changed. As
    kube-state-metrics does per object, each family's samples are grouped by the source they
    belong to (``project`` and ``source`` labels); a group whose samples are the same as last
    time is written from its cached bytes. The output is byte for byte what encoding every
    family whole would give: both formats encode each sample on its own line, and ``_created``
    samples, which the text format moves to the end of a family, are switched off.
    """

    def __init__(self) -> None:
        self._chunks: dict[tuple[str, str, str, int], _Chunk] = {}
        self._headers: dict[tuple[str, str, str, str], tuple[bytes, bytes]] = {}

    def render(self, registry: CollectorRegistry) -> Snapshot:
        started = time.perf_counter()
        text, om = _Stream(CONTENT_TYPE_PLAIN_0_0_4), _Stream(OPENMETRICS_TYPE)
        kept: dict[tuple[str, str, str, int], _Chunk] = {}
        for family in registry.collect():
            header = self._header(family)
            text.write(header[0])
            om.write(header[1])
            for key, digest, group in self._groups(family):
                chunk = self._chunks.get(key)
                if chunk is None or chunk.digest != digest:
                    chunk = self._chunk(family, group(), digest, header)
                kept[key] = chunk
                text.write(zlib.decompress(chunk.text))
                om.write(zlib.decompress(chunk.openmetrics))
        om.write(_EOF)
        self._chunks = kept
        return Snapshot(
            text=text.close(),
            openmetrics=om.close(),
            rendered_at=time.monotonic(),
            seconds=time.perf_counter() - started,
        )

    def _header(self, family: Metric) -> tuple[bytes, bytes]:
        key = (family.name, family.type, family.documentation, family.unit)
        header = self._headers.get(key)
        if header is None:
            header = self._headers[key] = _encode(_empty(family))
        return header

    @staticmethod
    def _groups(
        family: Metric,
    ) -> Iterator[tuple[tuple[str, str, str, int], int, Callable[[], list[Sample]]]]:
        """Runs of consecutive samples of one source (samples without one form their own),
        with a hash of each and how to get its samples."""
        seen: dict[tuple[str, str], int] = {}
        if isinstance(family, Grouped):
            for owner, digest, make in family.groups():
                yield _key(family, owner, seen), digest, make
            return
        group: list[Sample] = []
        owner = ("", "")
        for sample in family.samples:
            this = (sample.labels.get("project", ""), sample.labels.get("source", ""))
            if group and this != owner:
                yield _key(family, owner, seen), _digest(group), _given(group)
                group = []
            owner = this
            group.append(sample)
        if group:
            yield _key(family, owner, seen), _digest(group), _given(group)

    @staticmethod
    def _chunk(
        family: Metric,
        group: list[Sample],
        digest: int,
        header: tuple[bytes, bytes],
    ) -> _Chunk:
        part = _empty(family)
        part.samples = list(group)
        text, om = _encode(part)
        return _Chunk(
            digest,
            zlib.compress(text.removeprefix(header[0]), 1),
            zlib.compress(om.removeprefix(header[1]), 1),
        )


def _digest(samples: list[Sample]) -> int:
    """A hash of everything of the samples that reaches the exposition."""
    return hash(tuple(map(_sample_key, samples)))


def _sample_key(s: Sample) -> tuple[object, ...]:
    extra = (repr(s.exemplar), repr(s.native_histogram)) if s.exemplar or s.native_histogram else ()
    return (s.name, tuple(s.labels.items()), s.value, s.timestamp, *extra)


def _given(samples: list[Sample]) -> Callable[[], list[Sample]]:
    return lambda: samples


def _empty(family: Metric) -> Metric:
    """A family like ``family`` with no samples: what encodes to its header alone."""
    return Metric(family.name, family.documentation, family.type, family.unit)


def _key(
    family: Metric, owner: tuple[str, str], seen: dict[tuple[str, str], int]
) -> tuple[str, str, str, int]:
    """Which group this is: the family, its source, and how many groups of that source came
    before in the family (none, unless a family lists a source's samples apart)."""
    count = seen.get(owner, 0)
    seen[owner] = count + 1
    return family.name, owner[0], owner[1], count


class RefreshTime(Collector):
    """When the rendering being served was made: collected while rendering, so its value is the
    rendering's own time. A scraper sees the age of what it got; an alert fires when it grows."""

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "synthbrew_exporter_last_refresh_timestamp_seconds",
            "When this /metrics rendering was made, as a Unix timestamp in seconds.",
        )
        family.add_metric([], time.time())
        yield family


class ExpositionCache:
    def __init__(
        self,
        registry: CollectorRegistry,
        version: Callable[[], int],
        *,
        refresh_seconds: float,
        max_age_seconds: float = 60.0,
        faults: Faults | None = None,
    ) -> None:
        self.registry = registry
        self.version = version
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self.faults = faults or Faults()
        self._renderer = Renderer()
        self._snapshot: Snapshot | None = None
        self._rendered_version = -1
        self._lock = threading.Lock()
        registry.register(RefreshTime())

    @property
    def snapshot(self) -> Snapshot:
        """The latest rendering; the first call renders synchronously."""
        with self._lock:
            if self._snapshot is None:
                self._rendered_version = self.version()
                self._snapshot = self._renderer.render(self.registry)
            return self._snapshot

    def rendered_version(self) -> int:
        return self._rendered_version

    def stale(self) -> str | None:
        """Why the rendering being served is too old to trust, or None: older than a refresh
        on schedule can explain (``max_age_seconds`` and two turns)."""
        current = self._snapshot
        if current is None:
            return "/metrics has not been rendered yet"
        age = time.monotonic() - current.rendered_at
        if age > self.max_age_seconds + 2 * self.refresh_seconds:
            return f"the /metrics rendering is {age:.0f}s old: refreshing it fails"
        return None

    def refresh(self) -> None:
        version = self.version()
        snap = self._renderer.render(self.registry)
        with self._lock:
            self._snapshot, self._rendered_version = snap, version
        log.debug("rendered /metrics in %.3fs (%d bytes)", snap.seconds, snap.text.size)

    async def run(self) -> None:
        """Re-render when the store changed or the rendering got old; forever. A failed refresh
        is logged and counted; the next turn tries again. Cancelled, it ends only once a
        refresh under way has finished (counting its failure): the store closes after this
        task, and a refresh still reading it then failed with "Connection already closed"."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            current = self._snapshot
            stale = current is None or time.monotonic() - current.rendered_at > self.max_age_seconds
            if stale or self.version() != self._rendered_version:
                # asyncio.wait, cancelled, leaves the refresh running: wait for it once more.
                refreshing = asyncio.ensure_future(asyncio.to_thread(self.refresh))
                try:
                    await asyncio.wait([refreshing])
                except asyncio.CancelledError:
                    await asyncio.wait([refreshing])
                    raise
                finally:
                    if (
                        refreshing.done()
                        and not refreshing.cancelled()
                        and (exc := refreshing.exception())
                    ):
                        self.faults.failed("exposition", exc, "rendering /metrics failed")
