"""The exporter's own activity: polls, errors, their duration. Directly instrumented.

These describe this process, not Synthbrew, so they start from zero with the process like any
exporter's self-metrics; the generation metrics, which must survive restarts, come from the store.
"""

from __future__ import annotations

import asyncio

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from exporter import __version__
from exporter.client import REASONS

# The contract's upstream reasons, plus `store`: the page arrived but could not be committed.
POLL_ERROR_REASONS = (*REASONS, "store")
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LABELS = ("project", "source")


class ExporterStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        # `_created` series double the exposition and no dashboard or rule here uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.polls = Counter(
            "synthbrew_exporter_polls",
            "Polls of a source's generation events, by outcome.",
            [*LABELS, "outcome"],
            registry=registry,
        )
        self.poll_errors = Counter(
            "synthbrew_exporter_poll_errors",
            "Failed polls of a source, by cause.",
            [*LABELS, "reason"],
            registry=registry,
        )
        self.poll_duration = Histogram(
            "synthbrew_exporter_poll_duration_seconds",
            "Time one poll of one source took, retries included, in seconds.",
            LABELS,
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.invalid_events = Counter(
            "synthbrew_exporter_invalid_events",
            "Events in a page that failed validation and were skipped.",
            LABELS,
            registry=registry,
        )
        self.possible_missed = Counter(
            "synthbrew_exporter_possible_missed_events",
            "Polls, after a source's first, that returned a full page none of whose events was"
            " stored before: older events may never have been seen.",
            LABELS,
            registry=registry,
        )
        self.source_up = Gauge(
            "synthbrew_exporter_source_up",
            "1 if the last poll of this source succeeded, else 0.",
            LABELS,
            registry=registry,
        )

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
        for outcome in ("success", "error"):
            self.polls.labels(project, source, outcome)
        for reason in POLL_ERROR_REASONS:
            self.poll_errors.labels(project, source, reason)
        self.poll_duration.labels(project, source)
        self.invalid_events.labels(project, source)
        self.possible_missed.labels(project, source)
