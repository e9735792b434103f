"""The exporter's own activity: polls, errors, their duration.

These describe this process, not Synthbrew, so they start from zero with the process like any
exporter's self-metrics; the generation metrics, which must survive restarts, come from the store.
The per-source ones are plain numbers exposed by a collector that builds fresh families per
scrape: prometheus_client's instrumented children (a lock and a value object per series, ~25
series per source) took 10.6 MB for a thousand sources, these take a tenth of that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.budget import Budgets
from exporter.client import REASONS
from exporter.metrics.labels import SOURCE_LABELS

# The contract's upstream reasons, plus `store`: the page arrived but could not be committed.
POLL_ERROR_REASONS = (*REASONS, "store")
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The `le` values as prometheus_client writes them for an instrumented histogram.
_BOUNDS = [floatToGoString(b) for b in POLL_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class _Source:
    """One source's polls since the process started."""

    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POLL_ERROR_REASONS, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(POLL_BUCKETS) + 1))
    seconds: float = 0.0
    invalid: int = 0
    missed: int = 0
    up: int = 0


class ExporterStats(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        # `_created` series double the exposition and no dashboard or rule here uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self._sources: dict[tuple[str, str], _Source] = {}
        registry.register(self)
        # The standard process_* (memory, CPU, fds), python_gc_* and python_info series.
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(standard)
        self.tasks = Gauge(
            "synthbrew_exporter_asyncio_tasks",
            "asyncio tasks alive in the exporter's event loop (polls in flight, servers).",
            registry=registry,
        )
        build = Gauge(
            "synthbrew_exporter_build_info",
            "The running exporter's version. Always 1.",
            ["version"],
            registry=registry,
        )
        build.labels(__version__).set(1)

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count the loop's tasks at scrape time: a leak shows as a number that only grows."""
        self.tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def register_source(self, project: str, source: str) -> None:
        """Create every series at zero so rates and alerts work before the first failure."""
        self._sources.setdefault((project, source), _Source())

    def record_poll(
        self,
        labels: tuple[str, str],
        *,
        ok: bool,
        seconds: float,
        reason: str | None = None,
        invalid: int = 0,
        possible_gap: bool = False,
    ) -> None:
        """One finished poll. Called on the event loop only; a scrape on another thread may
        see a poll half-recorded, as with prometheus_client's own histograms."""
        stats = self._sources.setdefault(labels, _Source())
        if ok:
            stats.ok += 1
        else:
            stats.failed += 1
        stats.up = 1 if ok else 0
        i = 0
        while i < len(POLL_BUCKETS) and seconds > POLL_BUCKETS[i]:
            i += 1
        stats.buckets[i] += 1
        stats.seconds += seconds
        if reason:
            stats.errors[reason] = stats.errors.get(reason, 0) + 1
        stats.invalid += invalid
        stats.missed += 1 if possible_gap else 0

    def collect(self) -> Iterator[Metric]:
        sources = sorted(self._sources.items())
        polls = CounterMetricFamily(
            "synthbrew_exporter_polls",
            "Polls of a source's generation events, by outcome.",
            labels=[*SOURCE_LABELS, "outcome"],
        )
        errors = CounterMetricFamily(
            "synthbrew_exporter_poll_errors",
            "Failed polls of a source, by cause.",
            labels=[*SOURCE_LABELS, "reason"],
        )
        duration = HistogramMetricFamily(
            "synthbrew_exporter_poll_duration_seconds",
            "Time one poll of one source took, retries included, in seconds.",
            labels=list(SOURCE_LABELS),
        )
        invalid = CounterMetricFamily(
            "synthbrew_exporter_invalid_events",
            "Events in a page that failed validation and were skipped.",
            labels=list(SOURCE_LABELS),
        )
        missed = CounterMetricFamily(
            "synthbrew_exporter_possible_missed_events",
            "Polls, after a source's first, that returned a full page none of whose events was"
            " stored before: older events may never have been seen.",
            labels=list(SOURCE_LABELS),
        )
        up = GaugeMetricFamily(
            "synthbrew_exporter_source_up",
            "1 if the last poll of this source succeeded, else 0.",
            labels=list(SOURCE_LABELS),
        )
        for (project, source), s in sources:
            polls.add_metric([project, source, "success"], s.ok)
            polls.add_metric([project, source, "error"], s.failed)
            for reason, count in s.errors.items():
                errors.add_metric([project, source, reason], count)
            cumulative, running = [], 0
            for bound, count in zip(_BOUNDS, s.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            duration.add_metric([project, source], cumulative, s.seconds)
            invalid.add_metric([project, source], s.invalid)
            missed.add_metric([project, source], s.missed)
            up.add_metric([project, source], s.up)
        yield from (polls, errors, duration, invalid, missed, up)


class ApiKeys(Collector):
    """Each API key's requests, waits and pacing (see :mod:`exporter.budget`); ``key`` is the
    project owning the key, or "default": a bounded name, never the key."""

    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "synthbrew_exporter_api_requests",
            "Requests made to the Synthbrew API, by key and HTTP status ('error': no answer).",
            labels=["key", "code"],
        )
        waited = CounterMetricFamily(
            "synthbrew_exporter_api_wait_seconds",
            "Time requests waited for their key's budget: a token, or the hold after a 429.",
            labels=["key"],
        )
        rate = GaugeMetricFamily(
            "synthbrew_exporter_api_rate_limit_requests_per_minute",
            "The pace a key is held to now (configured, or learned from 429s); absent: none.",
            labels=["key"],
        )
        hold = GaugeMetricFamily(
            "synthbrew_exporter_api_hold_seconds",
            "Seconds until a key may be used again after a 429 (0: not held).",
            labels=["key"],
        )
        for budget in self.budgets.all():
            for code, n in sorted(budget.requests.items()):
                requests.add_metric([budget.name, code], n)
            waited.add_metric([budget.name], budget.wait_seconds)
            if budget.rate is not None:
                rate.add_metric([budget.name], budget.rate)
            hold.add_metric([budget.name], max(0.0, budget.hold_until - budget.clock()))
        yield from (requests, waited, rate, hold)
