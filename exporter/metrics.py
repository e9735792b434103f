"""Generation metrics, built fresh from the store on every scrape.

Following the Prometheus "Writing exporters" guidance, nothing here is a live counter object: each
scrape aggregates the stored events in SQL (one scan per metric group, whatever the history size)
and yields new metric families. Because the numbers come from the events table, a run counts
once however often it was polled, and a restarted exporter reports the same values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from duckdb import DuckDBPyConnection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.billing import Month, cost, current_month, project_linear
from exporter.config import BillingConfig
from exporter.store import Store

log = logging.getLogger(__name__)

FINISHED = "(status IN ('success', 'failed') OR finished_at IS NOT NULL)"
LABELS = ["project", "source"]


@dataclass(frozen=True)
class SourceNames:
    project: str
    source: str


class StoreCollector(Collector):
    """A ``prometheus_client`` custom collector over the events table."""

    def __init__(
        self,
        store: Store,
        names: Mapping[tuple[UUID, UUID], SourceNames],
        buckets: Sequence[float],
        billing: BillingConfig | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.names = dict(names)
        self.buckets = tuple(sorted(buckets))
        self.billing = billing or BillingConfig()
        self.now = now

    def describe(self) -> Iterator[Metric]:
        """Nothing to describe up front: registering must not query the database."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        cur = self.store.cursor()
        yield from self._runs(cur)
        yield from self._durations(cur)
        yield from self._in_progress(cur)
        yield from self._last_finished(cur)
        yield self._info()
        yield from self._billing(cur)
        scrape = GaugeMetricFamily(
            "synthbrew_exporter_store_scrape_duration_seconds",
            "Time this scrape spent aggregating the event store, in seconds.",
        )
        scrape.add_metric([], time.perf_counter() - started)
        yield scrape

    def _named(self, rows: list[Any]) -> Iterator[tuple[list[str], tuple[Any, ...]]]:
        """Rows keyed by (project_id, source_id) turned into label values; unconfigured dropped."""
        for row in rows:
            names = self.names.get((row[0], row[1]))
            if names is not None:
                yield [names.project, names.source], row[2:]

    def _runs(self, cur: DuckDBPyConnection) -> Iterator[Metric]:
        rows = cur.execute(
            f"""SELECT project_id, source_id, trigger, status, count(*),
                       sum(billable_rows), sum(total_inserted_rows)
                FROM events WHERE {FINISHED} GROUP BY ALL"""
        ).fetchall()
        runs = CounterMetricFamily(
            "synthbrew_generation_runs",
            "Finished generation runs (status success or failed, or any status with finishedAt).",
            labels=[*LABELS, "trigger", "status"],
        )
        failures = CounterMetricFamily(
            "synthbrew_generation_failures",
            "Finished generation runs with status failed.",
            labels=[*LABELS, "trigger"],
        )
        billable = CounterMetricFamily(
            "synthbrew_generation_billable_rows",
            "Rows counted toward billing (billableRows), summed over finished runs.",
            labels=[*LABELS, "trigger"],
        )
        inserted = CounterMetricFamily(
            "synthbrew_generation_inserted_rows",
            "Rows inserted into the target (totalInsertedRows), summed over finished runs.",
            labels=[*LABELS, "trigger"],
        )
        per_trigger: dict[tuple[str, str, str], list[int]] = {}
        for labels, (trigger, status, count, bill, ins) in self._named(rows):
            runs.add_metric([*labels, str(trigger), str(status)], int(count))
            sums = per_trigger.setdefault((labels[0], labels[1], str(trigger)), [0, 0, 0])
            sums[0] += int(count) if status == "failed" else 0
            sums[1] += int(bill or 0)
            sums[2] += int(ins or 0)
        for key, (failed, bill_sum, ins_sum) in sorted(per_trigger.items()):
            failures.add_metric(list(key), failed)
            billable.add_metric(list(key), bill_sum)
            inserted.add_metric(list(key), ins_sum)
        yield from (runs, failures, billable, inserted)

    def _durations(self, cur: DuckDBPyConnection) -> Iterator[Metric]:
        filters = ", ".join(
            f"count(*) FILTER (WHERE duration_ms <= {int(b * 1000)})" for b in self.buckets
        )
        rows = cur.execute(
            f"""SELECT project_id, source_id, trigger, status, {filters},
                       count(*), sum(duration_ms) / 1000.0
                FROM events WHERE {FINISHED} AND duration_ms IS NOT NULL GROUP BY ALL"""
        ).fetchall()
        family = HistogramMetricFamily(
            "synthbrew_generation_duration_seconds",
            "Duration of finished generation runs (durationMs), in seconds.",
            labels=[*LABELS, "trigger", "status"],
        )
        n = len(self.buckets)
        for labels, values in self._named(rows):
            trigger, status, *counts = values
            bucket_counts = [int(c) for c in counts[:n]]
            total, total_sum = int(counts[n]), float(counts[n + 1] or 0)
            family.add_metric(
                [*labels, str(trigger), str(status)],
                buckets=[
                    *((_le(b), c) for b, c in zip(self.buckets, bucket_counts, strict=True)),
                    ("+Inf", total),
                ],
                sum_value=total_sum,
            )
        yield family

    def _in_progress(self, cur: DuckDBPyConnection) -> Iterator[Metric]:
        rows = cur.execute(
            """SELECT project_id, source_id, status, count(*) FROM events
               WHERE finished_at IS NULL AND status IN ('queued', 'active')
                 AND stale_since IS NULL
               GROUP BY ALL"""
        ).fetchall()
        stale_rows = cur.execute(
            """SELECT project_id, source_id, count(*) FROM events
               WHERE stale_since IS NOT NULL AND finished_at IS NULL GROUP BY ALL"""
        ).fetchall()
        counts = {(tuple(labels), str(status)): int(n) for labels, (status, n) in self._named(rows)}
        stale = {tuple(labels): int(n) for labels, (n,) in self._named(stale_rows)}
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
        for names in sorted(self.names.values(), key=lambda n: (n.project, n.source)):
            key = (names.project, names.source)
            for status in ("queued", "active"):
                gauge.add_metric([*key, status], counts.get((key, status), 0))
            stale_gauge.add_metric(list(key), stale.get(key, 0))
        yield gauge
        yield stale_gauge

    def _last_finished(self, cur: DuckDBPyConnection) -> Iterator[Metric]:
        rows = cur.execute(
            f"""SELECT project_id, source_id, status, epoch(max(finished_at))
                FROM events WHERE {FINISHED} AND finished_at IS NOT NULL GROUP BY ALL"""
        ).fetchall()
        family = GaugeMetricFamily(
            "synthbrew_generation_last_finished_timestamp_seconds",
            "finishedAt of the newest finished run per status, as a Unix timestamp in seconds.",
            labels=[*LABELS, "status"],
        )
        for labels, (status, when) in self._named(rows):
            family.add_metric([*labels, str(status)], float(when))
        yield family

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

    def _billing(self, cur: DuckDBPyConnection) -> Iterator[Metric]:
        now = self.now()
        month = current_month(now, self.billing.timezone)
        rows = cur.execute(
            f"""SELECT project_id, source_id, sum(billable_rows) FROM events
                WHERE {FINISHED} AND finished_at >= $start AND finished_at < $end
                GROUP BY ALL""",
            {"start": month.start, "end": month.end},
        ).fetchall()
        by_source = {tuple(labels): float(n) for labels, (n,) in self._named(rows)}
        mtd = GaugeMetricFamily(
            "synthbrew_billable_rows_month_to_date",
            f"Billable rows of runs finished this calendar month ({self.billing.timezone}).",
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


def _le(bound: float) -> str:
    return str(float(bound))
