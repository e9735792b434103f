"""Internal failures are counted and logged with their cause; a dead task ends the process."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import duckdb
import pytest
from prometheus_client import CollectorRegistry

from exporter.store import StoreError
from exporter.supervision import Faults, TaskDied, cause, guarded, until_stopped


@pytest.mark.parametrize(
    "module", ["exporter.supervision", "exporter.exposition", "exporter.store"]
)
def test_the_module_imports_first_in_a_new_interpreter(module: str) -> None:
    """The store reports its failures through supervision, so supervision must not import the
    store: imported first, either end of that loop failed half-initialised."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_the_cause_is_the_store_message_or_the_type_and_first_line() -> None:
    assert cause(StoreError("x.duckdb: database write failed: disk full")) == (
        "x.duckdb: database write failed: disk full"
    )
    assert cause(duckdb.OutOfMemoryException("Out of Memory Error: no\nmore")) == (
        "OutOfMemoryException: Out of Memory Error: no"
    )
    assert cause(KeyError()) == "KeyError"


def test_a_failure_is_counted_by_task_and_logged_with_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults = Faults()
    registry = CollectorRegistry()
    registry.register(faults)
    with caplog.at_level(logging.ERROR):
        faults.failed("exposition", duckdb.IOException("IO Error: disk gone"), "rendering failed")
        faults.failed("poll", ValueError("bug"), "poll shop/orders")
    value = registry.get_sample_value
    assert value("synthbrew_exporter_internal_errors_total", {"task": "exposition"}) == 1
    assert value("synthbrew_exporter_internal_errors_total", {"task": "poll"}) == 1
    assert value("synthbrew_exporter_internal_errors_total", {"task": "ingest"}) == 0
    expected, bug = caplog.records
    assert expected.getMessage() == "rendering failed: IOException: IO Error: disk gone"
    assert expected.exc_info is None, "a database error needs no traceback"
    assert bug.exc_info is not None, "anything else is a bug: its traceback is logged"


async def test_guarded_work_returns_none_after_a_failure() -> None:
    faults = Faults()

    async def broken() -> int:
        raise RuntimeError("export target gone")

    async def fine() -> int:
        return 7

    assert await guarded(broken(), faults, "export", "export failed") is None
    assert await guarded(fine(), faults, "export", "export failed") == 7
    assert faults.counts["export"] == 1


async def test_a_task_that_ends_before_stop_is_fatal() -> None:
    async def dies() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("queue broken")

    task = asyncio.create_task(dies(), name="ingest")
    with pytest.raises(TaskDied, match=r"the ingest task stopped \(RuntimeError: queue broken\)"):
        await until_stopped(asyncio.Event(), [task])


async def test_stop_ends_the_wait_quietly() -> None:
    stop = asyncio.Event()
    forever = asyncio.create_task(asyncio.sleep(3600), name="http")
    asyncio.get_running_loop().call_later(0.01, stop.set)
    await until_stopped(stop, [forever])
    assert not forever.done()
    forever.cancel()
