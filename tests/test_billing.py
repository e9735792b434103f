"""Month-to-date billing gauges against hand computation, across a month boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.billing import cost, current_month, project_linear
from exporter.config import BillingConfig
from exporter.metrics import SourceNames, store_metrics
from exporter.store import Rollups, Store
from tests.factories import PROJECT, SOURCE, run

NOV1 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "x.duckdb")
    yield s
    s.close()


@pytest.fixture
def reopen(store: Store) -> Iterator[Callable[[str], Store]]:
    """The same database opened for another billing timezone: the exporter restarted with a
    new ``billing.timezone``, which re-days the usage it keeps."""
    opened: list[Store] = []

    def again(timezone: str) -> Store:
        store.close()
        for earlier in opened:
            earlier.close()
        opened[:] = [Store(store.path, rollups=Rollups(timezone=timezone))]
        return opened[0]

    yield again
    for s in opened:
        s.close()


def finished_at(when: datetime, rows: int, **extra: Any) -> Any:
    start = when - timedelta(seconds=30)
    return run(
        queuedAt=start.isoformat(),
        startedAt=start.isoformat(),
        createdAt=start.isoformat(),
        finishedAt=when.isoformat(),
        updatedAt=when.isoformat(),
        billableRows=rows,
        **extra,
    )


def gauges(store: Store, now: datetime, billing: BillingConfig) -> CollectorRegistry:
    assert store.rollups.timezone == billing.timezone, "the store keeps usage by its calendar"
    registry = CollectorRegistry()
    names = {(PROJECT, SOURCE): SourceNames("shop", "orders")}
    registry.register(store_metrics(store, names, billing, now=lambda: now))
    return registry


def fill(store: Store) -> None:
    store.ingest_page(
        PROJECT,
        SOURCE,
        [
            finished_at(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), 1_000),
            finished_at(datetime(2026, 11, 1, 0, 30, tzinfo=UTC), 2_000),
            finished_at(datetime(2026, 11, 10, 12, 0, tzinfo=UTC), 4_000),
            finished_at(datetime(2026, 11, 10, 13, 0, tzinfo=UTC), 99, status="failed"),
            run(
                status="active",
                finishedAt=None,
                billableRows=50_000,
                queuedAt="2026-11-10T00:00:00Z",
                createdAt="2026-11-10T00:00:00Z",
            ),
        ],
        now=NOV1,
    )


def value(r: CollectorRegistry, name: str, **labels: str) -> float | None:
    return r.get_sample_value(name, labels or {"project": "shop", "source": "orders"})


def test_month_to_date_in_utc_and_projection(store: Store) -> None:
    fill(store)
    now = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)
    r = gauges(store, now, BillingConfig())
    assert value(r, "synthbrew_billable_rows_month_to_date") == 2_000 + 4_000 + 99
    # 15 of November's 30 days have passed: the projection doubles the month so far.
    assert value(r, "synthbrew_billable_rows_projected_month_end") == pytest.approx(2 * 6_099)


def test_calendar_month_follows_the_configured_timezone(
    store: Store, reopen: Callable[[str], Store]
) -> None:
    fill(store)
    now = datetime(2026, 11, 16, tzinfo=UTC)
    new_york = gauges(reopen("America/New_York"), now, BillingConfig(timezone="America/New_York"))
    # 2026-11-01 00:30 UTC is 2026-10-31 20:30 in New York: still October there.
    assert value(new_york, "synthbrew_billable_rows_month_to_date") == 4_000 + 99
    tokyo = gauges(
        reopen("Asia/Tokyo"),
        datetime(2026, 10, 31, 16, 0, tzinfo=UTC),
        BillingConfig(timezone="Asia/Tokyo"),
    )
    # 2026-10-31 16:00 UTC is already November 1st in Tokyo, and so is 23:30 UTC on the 31st.
    assert value(tokyo, "synthbrew_billable_rows_month_to_date") == 1_000 + 2_000 + 4_000 + 99


def test_first_instant_of_a_month_starts_from_zero(store: Store) -> None:
    october = finished_at(datetime(2026, 10, 31, 23, 59, tzinfo=UTC), 1_000)
    store.ingest_page(PROJECT, SOURCE, [october], now=NOV1)
    r = gauges(store, NOV1, BillingConfig())
    assert value(r, "synthbrew_billable_rows_month_to_date") == 0
    assert value(r, "synthbrew_billable_rows_projected_month_end") == 0


def test_cost_and_included_rows(store: Store) -> None:
    fill(store)
    now = datetime(2026, 11, 16, tzinfo=UTC)
    billing = BillingConfig(price_per_1000_rows=2.5, currency="EUR", included_rows={"shop": 5_000})
    r = gauges(store, now, billing)
    project = {"project": "shop"}
    assert value(r, "synthbrew_billing_included_rows", **project) == 5_000
    assert value(r, "synthbrew_billing_included_rows_used_ratio", **project) == pytest.approx(
        6_099 / 5_000
    )
    assert value(
        r, "synthbrew_billing_projected_included_rows_used_ratio", **project
    ) == pytest.approx(12_198 / 5_000)
    eur = {"project": "shop", "currency": "EUR"}
    assert value(r, "synthbrew_billing_estimated_cost_month_to_date", **eur) == pytest.approx(
        (6_099 - 5_000) * 2.5 / 1000
    )
    assert value(r, "synthbrew_billing_projected_cost_month_end", **eur) == pytest.approx(
        (12_198 - 5_000) * 2.5 / 1000
    )


def test_without_billing_config_no_cost_series(store: Store) -> None:
    fill(store)
    r = gauges(store, datetime(2026, 11, 16, tzinfo=UTC), BillingConfig())
    assert (
        value(r, "synthbrew_billing_estimated_cost_month_to_date", project="shop", currency="USD")
        is None
    )


def test_month_bounds_and_dst() -> None:
    month = current_month(datetime(2026, 11, 15, tzinfo=UTC), "Europe/Berlin")
    assert month.start == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    assert month.end == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    october = current_month(datetime(2026, 10, 15, tzinfo=UTC), "Europe/Berlin")
    assert october.start == datetime(2026, 9, 30, 22, 0, tzinfo=UTC), "summer time"
    assert (october.end - october.start) == timedelta(days=31, hours=1), "the DST hour is real"
    december = current_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "UTC")
    assert december.end == datetime(2027, 1, 1, tzinfo=UTC)


def test_pure_helpers() -> None:
    month = current_month(datetime(2026, 2, 8, tzinfo=UTC), "UTC")
    assert project_linear(100, month, datetime(2026, 2, 8, tzinfo=UTC)) == pytest.approx(400)
    assert cost(1_500, 1_000, 4) == 2
    assert cost(500, 1_000, 4) == 0
