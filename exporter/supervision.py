"""Background work that survives its own failures, and the one way it may not.

Every turn of background work (a /metrics refresh, a batch write, a scheduled poll or export)
that raises is logged with its cause, counted in ``synthbrew_exporter_internal_errors_total``,
and the work goes on at its next turn. A task that ends for good (a bug that escapes its loop)
must not leave a process that looks alive and does nothing: :func:`until_stopped` turns that
into :class:`TaskDied`, which the cli reports and exits non-zero on, so a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Sequence
from typing import TypeVar

import duckdb
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.errors import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Where an internal failure happened: the `task` label's values.
TASKS = ("exposition", "collector", "ingest", "poll", "export", "reload")


class TaskDied(Exception):
    """A background task the exporter cannot work without has ended."""


def cause(exc: BaseException) -> str:
    """What went wrong, in one line: the store's own wording, else the type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, StoreError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Faults(Collector):
    """Internal failures, counted by task and logged once per cause (see ``logs.RepeatFilter``)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(TASKS, 0)

    def failed(self, task: str, exc: BaseException, what: str, alike: str | None = None) -> None:
        """Count and log one failure of ``task``; ``what`` says what failed, for the log line.
        Failures with the same ``alike`` and cause share one line a minute (default: ``what``).
        A failure that is not the database's or the store's is a bug: its traceback is logged."""
        self.counts[task] = self.counts.get(task, 0) + 1
        expected = isinstance(exc, StoreError | duckdb.Error)
        reason = cause(exc)
        log.error(
            f"{what}: {reason}",
            exc_info=None if expected else exc,
            extra={"repeat_key": f"{alike or what}: {reason}"},
        )

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "synthbrew_exporter_internal_errors",
            "Failures inside the exporter, by where they happened; the work went on at its next"
            " turn.",
            labels=["task"],
        )
        for task, count in self.counts.items():
            family.add_metric([task], count)
        yield family


async def guarded(work: Awaitable[T], faults: Faults, task: str, what: str) -> T | None:
    """``work``'s result, or None after logging and counting its failure."""
    try:
        return await work
    except Exception as exc:
        faults.failed(task, exc, what)
        return None


async def until_stopped(stop: asyncio.Event, tasks: Sequence[asyncio.Task[object]]) -> None:
    """Wait for ``stop``; raise :class:`TaskDied` if one of ``tasks`` ends before it."""
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if stopping in done:
        return
    task = next(iter(done))
    exc = None if task.cancelled() else task.exception()
    why = cause(exc) if exc is not None else "it returned"
    raise TaskDied(
        f"the {task.get_name()} task stopped ({why}); exiting so a supervisor restarts the exporter"
    ) from exc
