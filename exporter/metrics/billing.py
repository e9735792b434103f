"""Month-to-date billing: billable rows of this calendar month, projected to its end, against
each project's included rows and price. Reads the billing rollup's current month only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.billing import Month, cost, current_month, project_linear
from exporter.config import BillingConfig
from exporter.metrics.generation import SourceFamilies, SourceNames
from exporter.metrics.labels import SOURCE_LABELS
from exporter.models import SourceKey
from exporter.store import Store
from exporter.store import reads as store_reads


class Billing(SourceFamilies):
    def __init__(
        self,
        store: Store,
        names: Mapping[SourceKey, SourceNames],
        billing: BillingConfig,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(store, names)
        self.billing = billing
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        timezone = self.store.rollups.timezone
        month = current_month(now, timezone)
        zone = ZoneInfo(timezone)
        first, end = (day.astimezone(zone).date() for day in (month.start, month.end))
        billable = store_reads.billable_between(self.store.cursor(), first, end)
        by_source = {
            tuple(labels): float(n) for key, n in billable.items() if (labels := self._labels(key))
        }
        mtd = GaugeMetricFamily(
            "synthbrew_billable_rows_month_to_date",
            f"Billable rows of runs finished this calendar month ({timezone}).",
            labels=list(SOURCE_LABELS),
        )
        projected = GaugeMetricFamily(
            "synthbrew_billable_rows_projected_month_end",
            "Billable rows this month projected linearly to the end of the month.",
            labels=list(SOURCE_LABELS),
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
