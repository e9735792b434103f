"""Generation metrics, built fresh from the store's running totals on every refresh.

Following the Prometheus "Writing exporters" guidance, nothing here is a live counter object:
each refresh reads the totals the store keeps in the same transaction as every page (a few
thousand rows, whatever the history size) and yields new metric families. Because they come
from the store, a run counts once however often it was polled, and a restarted exporter reports
the same values. What the counters count when a finished run changes is documented in
``exporter.store.totals``: they never go down, and each has a ``_retracted`` twin.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.billing import Month, cost, current_month, project_linear
from exporter.config import BillingConfig
from exporter.duration_histogram import DurationHistogram
from exporter.models import IN_FLIGHT_STATUSES
from exporter.store import Store
from exporter.store import reads as store_reads

log = logging.getLogger(__name__)

LABELS = ["project", "source"]
_RETRACTED = " Decreases of the same value, when a finished run changed, are counted in {}."


@dataclass(frozen=True)
class SourceNames:
    project: str
    source: str


class StoreCollector(Collector):
    """A ``prometheus_client`` custom collector over the store's totals."""

    def __init__(
        self,
        store: Store,
        names: Mapping[tuple[UUID, UUID], SourceNames],
        billing: BillingConfig | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.names = dict(names)
        self.billing = billing or BillingConfig()
        self.now = now

    def describe(self) -> Iterator[Metric]:
        """Nothing to describe up front: registering must not query the database."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        month = current_month(now, self.store.rollups.timezone)
        reading = self._read(month)
        yield from self._runs(reading)
        yield from self._rows(reading)
        yield self._durations(reading)
        yield from self._in_progress(reading)
        yield self._last_finished(reading)
        yield self._info()
        yield from self._billing(reading, month, now)
        yield from self._store(reading)
        scrape = GaugeMetricFamily(
            "synthbrew_exporter_store_scrape_duration_seconds",
            "Time this refresh spent reading the store (its totals and live runs), in seconds.",
        )
        scrape.add_metric([], reading.seconds)
        yield scrape

    def _read(self, month: Month) -> _Reading:
        """Everything the families show, read in one go: small tables and the live runs."""
        started = time.perf_counter()
        cur = self.store.cursor()
        zone = ZoneInfo(self.store.rollups.timezone)
        first, end = (day.astimezone(zone).date() for day in (month.start, month.end))
        return _Reading(
            runs=store_reads.run_totals(cur),
            rows=store_reads.row_totals(cur),
            in_progress=store_reads.in_progress(cur),
            stale=store_reads.stale_runs(cur),
            last_finished=store_reads.last_finished(cur),
            billable=store_reads.billable_between(cur, first, end),
            memory=store_reads.duckdb_memory(cur),
            sizes=store_reads.table_sizes(cur),
            seconds=time.perf_counter() - started,
        )

    def _labels(self, key: tuple[UUID, UUID]) -> list[str] | None:
        """The configured names of a source; None for a source no longer configured."""
        names = self.names.get(key)
        return None if names is None else [names.project, names.source]

    def _runs(self, reading: _Reading) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "synthbrew_generation_runs",
            "Finished generation runs (status success or failed, or any status with finishedAt),"
            " counted when a run enters this trigger and status."
            + _RETRACTED.format("synthbrew_generation_runs_retracted_total"),
            labels=[*LABELS, "trigger", "status"],
        )
        runs_retracted = CounterMetricFamily(
            "synthbrew_generation_runs_retracted",
            "Finished runs that later left this trigger and status (e.g. a failed run retried"
            " under the same id).",
            labels=[*LABELS, "trigger", "status"],
        )
        failures = CounterMetricFamily(
            "synthbrew_generation_failures",
            "Finished generation runs with status failed."
            + _RETRACTED.format("synthbrew_generation_failures_retracted_total"),
            labels=[*LABELS, "trigger"],
        )
        failures_retracted = CounterMetricFamily(
            "synthbrew_generation_failures_retracted",
            "Failed runs that later stopped being failed (retried, or corrected).",
            labels=[*LABELS, "trigger"],
        )
        failed: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
        for total in reading.runs:
            labels = self._labels(total.source)
            if labels is None:
                continue
            series = [*labels, total.trigger, total.status]
            runs.add_metric(series, total.runs)
            runs_retracted.add_metric(series, total.runs_retracted)
            counts = failed[(*labels, total.trigger)]
            if total.status == "failed":
                counts[0] += total.runs
                counts[1] += total.runs_retracted
        for row in reading.rows:
            labels = self._labels(row.source)
            if labels is not None:
                failed.setdefault((*labels, row.trigger), [0, 0])
        for key, (count, retracted) in sorted(failed.items()):
            failures.add_metric(list(key), count)
            failures_retracted.add_metric(list(key), retracted)
        yield from (runs, runs_retracted, failures, failures_retracted)

    def _rows(self, reading: _Reading) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(
                f"synthbrew_generation_{name}", help_text, labels=[*LABELS, "trigger"]
            )
            for name, help_text in (
                (
                    "billable_rows",
                    "Rows counted toward billing (billableRows), summed over finished runs; a"
                    " run's later increases are added."
                    + _RETRACTED.format("synthbrew_generation_billable_rows_retracted_total"),
                ),
                (
                    "billable_rows_retracted",
                    "Billable rows taken back when a finished run was corrected downwards.",
                ),
                (
                    "inserted_rows",
                    "Rows inserted into the target (totalInsertedRows), summed over finished"
                    " runs; a run's later increases are added."
                    + _RETRACTED.format("synthbrew_generation_inserted_rows_retracted_total"),
                ),
                (
                    "inserted_rows_retracted",
                    "Inserted rows taken back when a finished run was corrected downwards.",
                ),
            )
        }
        for row in reading.rows:
            labels = self._labels(row.source)
            if labels is None:
                continue
            series = [*labels, row.trigger]
            families["billable_rows"].add_metric(series, row.billable_rows)
            families["billable_rows_retracted"].add_metric(series, row.billable_rows_retracted)
            families["inserted_rows"].add_metric(series, row.inserted_rows)
            families["inserted_rows_retracted"].add_metric(series, row.inserted_rows_retracted)
        yield from families.values()

    def _durations(self, reading: _Reading) -> Metric:
        series = []
        for total in reading.runs:
            labels = self._labels(total.source)
            if labels is not None and total.duration_count:
                series.append(([*labels, total.trigger, total.status], total))
        return DurationHistogram(
            "synthbrew_generation_duration_seconds",
            "Duration of finished generation runs (durationMs), in seconds; a run is observed"
            " each time it enters a finished trigger and status with a duration.",
            [*LABELS, "trigger", "status"],
            self.store.rollups.duration_buckets,
            series,
        )

    def _in_progress(self, reading: _Reading) -> Iterator[Metric]:
        counts, stale = reading.in_progress, reading.stale
        gauge = GaugeMetricFamily(
            "synthbrew_generation_in_progress",
            "Runs now queued or active (runs flagged stale excluded).",
            labels=[*LABELS, "status"],
        )
        stale_gauge = GaugeMetricFamily(
            "synthbrew_generation_stale_runs",
            "Runs last seen queued or active that left the event window without finishing.",
            labels=LABELS,
        )
        for key, names in sorted(self.names.items(), key=lambda kv: (kv[1].project, kv[1].source)):
            labels = [names.project, names.source]
            for status in sorted(IN_FLIGHT_STATUSES):
                gauge.add_metric([*labels, status], counts.get((key, status), 0))
            stale_gauge.add_metric(labels, stale.get(key, 0))
        yield gauge
        yield stale_gauge

    def _last_finished(self, reading: _Reading) -> Metric:
        family = GaugeMetricFamily(
            "synthbrew_generation_last_finished_timestamp_seconds",
            "finishedAt of the newest finished run per status, as a Unix timestamp in seconds.",
            labels=[*LABELS, "status"],
        )
        for (key, status), when in sorted(reading.last_finished.items(), key=str):
            labels = self._labels(key)
            if labels is not None:
                family.add_metric([*labels, status], when.timestamp())
        return family

    def _info(self) -> Metric:
        family = GaugeMetricFamily(
            "synthbrew_source_info",
            "Maps configured project and source names to their ids. Always 1.",
            labels=[*LABELS, "project_id", "source_id"],
        )
        for (project_id, source_id), names in sorted(
            self.names.items(), key=lambda kv: (kv[1].project, kv[1].source)
        ):
            family.add_metric([names.project, names.source, str(project_id), str(source_id)], 1)
        return family

    def _billing(self, reading: _Reading, month: Month, now: datetime) -> Iterator[Metric]:
        timezone = self.store.rollups.timezone
        by_source = {
            tuple(labels): float(n)
            for key, n in reading.billable.items()
            if (labels := self._labels(key))
        }
        mtd = GaugeMetricFamily(
            "synthbrew_billable_rows_month_to_date",
            f"Billable rows of runs finished this calendar month ({timezone}).",
            labels=LABELS,
        )
        projected = GaugeMetricFamily(
            "synthbrew_billable_rows_projected_month_end",
            "Billable rows this month projected linearly to the end of the month.",
            labels=LABELS,
        )
        per_project: dict[str, float] = {}
        for names in sorted(self.names.values(), key=lambda n: (n.project, n.source)):
            rows_mtd = by_source.get((names.project, names.source), 0.0)
            mtd.add_metric([names.project, names.source], rows_mtd)
            projected.add_metric(
                [names.project, names.source], project_linear(rows_mtd, month, now)
            )
            per_project[names.project] = per_project.get(names.project, 0.0) + rows_mtd
        yield mtd
        yield projected
        yield from self._allowance(per_project, month, now)

    def _allowance(
        self, per_project: dict[str, float], month: Month, now: datetime
    ) -> Iterator[Metric]:
        billing = self.billing
        included = GaugeMetricFamily(
            "synthbrew_billing_included_rows",
            "Billable rows included in the project's monthly plan (billing.included_rows).",
            labels=["project"],
        )
        used = GaugeMetricFamily(
            "synthbrew_billing_included_rows_used_ratio",
            "Share of the monthly included rows used so far (1 = all used).",
            labels=["project"],
        )
        projected_used = GaugeMetricFamily(
            "synthbrew_billing_projected_included_rows_used_ratio",
            "Share of the monthly included rows the month-end projection would use.",
            labels=["project"],
        )
        for project, allowance in sorted(billing.included_rows.items()):
            rows_mtd = per_project.get(project, 0.0)
            included.add_metric([project], allowance)
            used.add_metric([project], rows_mtd / allowance if allowance else 0.0)
            projection = project_linear(rows_mtd, month, now)
            projected_used.add_metric([project], projection / allowance if allowance else 0.0)
        if billing.included_rows:
            yield from (included, used, projected_used)
        if billing.price_per_1000_rows is None:
            return
        cost_mtd = GaugeMetricFamily(
            "synthbrew_billing_estimated_cost_month_to_date",
            "Estimated cost this month: rows beyond the included ones times the price.",
            labels=["project", "currency"],
        )
        cost_end = GaugeMetricFamily(
            "synthbrew_billing_projected_cost_month_end",
            "Estimated cost at month end if usage continues at this month's average rate.",
            labels=["project", "currency"],
        )
        for project, rows_mtd in sorted(per_project.items()):
            allowance = billing.included_rows.get(project, 0)
            labels = [project, billing.currency]
            price = billing.price_per_1000_rows
            cost_mtd.add_metric(labels, cost(rows_mtd, allowance, price))
            cost_end.add_metric(
                labels, cost(project_linear(rows_mtd, month, now), allowance, price)
            )
        yield from (cost_mtd, cost_end)

    def _store(self, reading: _Reading) -> Iterator[Metric]:
        memory = GaugeMetricFamily(
            "synthbrew_exporter_duckdb_memory_bytes",
            "Memory DuckDB holds, by what holds it (duckdb_memory()); the total is capped by"
            " database.memory_limit.",
            labels=["tag"],
        )
        for tag, used in sorted(reading.memory.items()):
            memory.add_metric([tag.lower()], used)
        yield memory
        sizes = reading.sizes
        stored = GaugeMetricFamily(
            "synthbrew_exporter_store_runs",
            "Runs stored, by table: live (can still change, indexed) and history.",
            labels=["table"],
        )
        for table, count in sizes.items():
            stored.add_metric([table], count)
        stats = self.store.stats
        yield stored
        for name, help_text, value in (
            ("write_batches", "Batches of pages committed to the store.", stats.batches),
            ("written_events", "Events handed to the store in committed batches.", stats.events),
            ("write_seconds", "Time spent committing batches, in seconds.", stats.seconds),
            ("retired_runs", "Runs moved from the live table to history.", stats.retired),
            (
                "history_lookups",
                "Batches with a run that may have been in history, so history was read.",
                stats.history_lookups,
            ),
            ("revived_runs", "Runs found in history changed, moved back to live.", stats.revived),
        ):
            family = CounterMetricFamily(f"synthbrew_exporter_store_{name}", help_text)
            family.add_metric([], value)
            yield family


@dataclass(frozen=True)
class _Reading:
    runs: list[store_reads.RunTotal]
    rows: list[store_reads.RowTotal]
    in_progress: dict[tuple[tuple[UUID, UUID], str], int]
    stale: dict[tuple[UUID, UUID], int]
    last_finished: dict[tuple[tuple[UUID, UUID], str], datetime]
    billable: dict[tuple[UUID, UUID], int]
    memory: dict[str, int]
    sizes: dict[str, int]
    seconds: float
