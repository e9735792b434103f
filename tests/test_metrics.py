"""The store-backed collector: every contract metric from hand-built events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.metrics import SourceNames, store_metrics
from exporter.store import Rollups, Store
from tests.factories import PROJECT, SOURCE, T0, run

BUCKETS = [1, 10, 60]
LABELS = {"project": "shop", "source": "orders"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "x.duckdb", rollups=Rollups(tuple(BUCKETS)))
    yield s
    s.close()


def registry_for(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    names = {(PROJECT, SOURCE): SourceNames("shop", "orders")}
    registry.register(store_metrics(store, names))
    return registry


def fill(store: Store) -> None:
    events = [
        run(durationMs=500, billableRows=10, totalInsertedRows=12),
        run(durationMs=5_000, billableRows=20, totalInsertedRows=25),
        run(
            status="failed",
            durationMs=30_000,
            billableRows=0,
            totalInsertedRows=3,
            errorMessage="boom",
        ),
        run(trigger="regenerate", durationMs=120_000, billableRows=7, totalInsertedRows=7),
        run(status="cancelled", durationMs=None, billableRows=1, totalInsertedRows=1),
        run(status="active", finishedAt=None, durationMs=None, billableRows=99),
        run(status="queued", startedAt=None, finishedAt=None, durationMs=None),
        run(status="queued", startedAt=None, finishedAt=None, durationMs=None),
        run(status="paused", finishedAt=None, durationMs=None, billableRows=50),
    ]
    store.ingest_page(PROJECT, SOURCE, events, now=T0)
    other = run(projectId=str(uuid4()))
    store.ingest_page(other.project_id, other.source_id, [other], now=T0)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**LABELS, **labels})


def test_counters_count_finished_runs_once(store: Store) -> None:
    fill(store)
    fill_again = [run(durationMs=500)]
    store.ingest_page(PROJECT, SOURCE, fill_again, now=T0)
    r = registry_for(store)
    runs = "synthbrew_generation_runs_total"
    assert value(r, runs, trigger="populate", status="success") == 3
    assert value(r, runs, trigger="populate", status="failed") == 1
    assert value(r, runs, trigger="populate", status="cancelled") == 1, "finishedAt makes it final"
    assert value(r, runs, trigger="regenerate", status="success") == 1
    assert value(r, runs, trigger="populate", status="active") is None
    assert value(r, runs, trigger="populate", status="paused") is None
    failures = "synthbrew_generation_failures_total"
    assert value(r, failures, trigger="populate") == 1
    assert value(r, failures, trigger="regenerate") == 0
    assert (
        value(r, "synthbrew_generation_billable_rows_total", trigger="populate") == 10 + 20 + 1 + 8
    )
    assert (
        value(r, "synthbrew_generation_inserted_rows_total", trigger="populate")
        == 12 + 25 + 3 + 1 + 10
    )
    assert value(r, "synthbrew_generation_billable_rows_total", trigger="regenerate") == 7


def test_duration_histogram(store: Store) -> None:
    fill(store)
    r = registry_for(store)
    name = "synthbrew_generation_duration_seconds"
    success = {"trigger": "populate", "status": "success"}
    assert value(r, f"{name}_bucket", le="1.0", **success) == 1
    assert value(r, f"{name}_bucket", le="10.0", **success) == 2
    assert value(r, f"{name}_bucket", le="+Inf", **success) == 2
    assert value(r, f"{name}_count", **success) == 2
    assert value(r, f"{name}_sum", **success) == pytest.approx(5.5)
    failed = {"trigger": "populate", "status": "failed"}
    assert value(r, f"{name}_bucket", le="10.0", **failed) == 0
    assert value(r, f"{name}_bucket", le="60.0", **failed) == 1
    regen = {"trigger": "regenerate", "status": "success"}
    assert value(r, f"{name}_bucket", le="60.0", **regen) == 0
    assert value(r, f"{name}_bucket", le="+Inf", **regen) == 1
    cancelled = {"trigger": "populate", "status": "cancelled"}
    assert value(r, f"{name}_count", **cancelled) is None, "no durationMs, not observed"


def test_in_progress_and_stale(store: Store) -> None:
    fill(store)
    r = registry_for(store)
    assert value(r, "synthbrew_generation_in_progress", status="queued") == 2
    assert value(r, "synthbrew_generation_in_progress", status="active") == 1
    assert value(r, "synthbrew_generation_stale_runs") == 0
    store.ingest_page(
        PROJECT, SOURCE, [], now=T0 + timedelta(hours=2), stale_after=timedelta(hours=1)
    )
    r = registry_for(store)
    assert value(r, "synthbrew_generation_in_progress", status="queued") == 0
    assert value(r, "synthbrew_generation_stale_runs") == 3


def test_last_finished_timestamp(store: Store) -> None:
    early = run(minutes=0)
    late = run(minutes=30)
    store.ingest_page(PROJECT, SOURCE, [early, late, run(status="failed", minutes=10)], now=T0)
    r = registry_for(store)
    assert late.finished_at is not None
    expected = late.finished_at.timestamp()
    assert (
        value(r, "synthbrew_generation_last_finished_timestamp_seconds", status="success")
        == expected
    )
    failed = value(r, "synthbrew_generation_last_finished_timestamp_seconds", status="failed")
    assert failed == (T0 + timedelta(minutes=10, seconds=30)).timestamp()


def test_source_info_and_unconfigured_sources(store: Store) -> None:
    fill(store)
    r = registry_for(store)
    info = r.get_sample_value(
        "synthbrew_source_info",
        {**LABELS, "project_id": str(PROJECT), "source_id": str(SOURCE)},
    )
    assert info == 1
    text = generate_latest(r).decode()
    assert text.count("synthbrew_generation_runs_total{") == 4, (
        "the unconfigured source is not shown"
    )


def test_empty_store_still_exposes_gauges(store: Store) -> None:
    r = registry_for(store)
    assert value(r, "synthbrew_generation_in_progress", status="active") == 0
    assert value(r, "synthbrew_generation_runs_total", trigger="populate", status="success") is None


def test_a_failing_collector_is_left_out_and_the_others_are_served(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    fill(store)
    registry = registry_for(store)
    healthy = generate_latest(registry).decode()
    # The billing rollup disappears under the running collector (as an out-of-memory query
    # or an unreadable table would make it fail), then comes back.
    store.cursor().execute("ALTER TABLE daily_usage RENAME TO daily_usage_away")
    broken = generate_latest(registry).decode()
    success = "synthbrew_exporter_scrape_collector_success"
    assert registry.get_sample_value(success, {"collector": "billing"}) == 0
    for other in ("runs", "rows", "in_progress", "last_finished", "source_info", "store_tables"):
        assert registry.get_sample_value(success, {"collector": other}) == 1, other
    assert "synthbrew_billable_rows_month_to_date" not in broken
    assert "synthbrew_billable_rows_month_to_date" in healthy

    def series(text: str) -> set[str]:
        return {
            line
            for line in text.splitlines()
            if not line.startswith(("synthbrew_billable", "synthbrew_exporter_", "#"))
        }

    assert series(broken) == series(healthy), "every other family is served unchanged"
    assert any(
        "metric collector billing failed: CatalogException" in r.getMessage()
        for r in caplog.records
    )
    store.cursor().execute("ALTER TABLE daily_usage_away RENAME TO daily_usage")
    assert registry.get_sample_value(success, {"collector": "billing"}) == 1
    assert generate_latest(registry).decode().count("synthbrew_billable_rows_month_to_date") > 0
