"""Generation metrics, built fresh from the store's running totals on every refresh.

Following the Prometheus "Writing exporters" guidance, nothing here is a live counter object:
each refresh reads the totals the store keeps in the same transaction as every page (a few
thousand rows, whatever the history size) and yields new metric families. Because they come
from the store, a run counts once however often it was polled, and a restarted exporter reports
the same values. What the counters count when a finished run changes is documented in
``exporter.store.totals``: they never go down, and each has a ``_retracted`` twin. One collector
per table it reads, so one failing query loses only its own families (see ``isolation``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.duration_histogram import DurationHistogram
from exporter.metrics.labels import SOURCE_LABELS
from exporter.models import IN_FLIGHT_STATUSES, SourceKey
from exporter.store import Store
from exporter.store import reads as store_reads

_RETRACTED = " Decreases of the same value, when a finished run changed, are counted in {}."


@dataclass(frozen=True)
class SourceNames:
    project: str
    source: str


class SourceFamilies(Collector):
    """A collector of per-source families: the store, and the configured names of its sources."""

    def __init__(self, store: Store, names: Mapping[SourceKey, SourceNames]) -> None:
        self.store = store
        self.names = dict(names)

    def describe(self) -> Iterator[Metric]:
        """Nothing to describe up front: registering must not query the database."""
        return iter(())

    def _labels(self, key: SourceKey) -> list[str] | None:
        """The configured names of a source; None for a source no longer configured."""
        names = self.names.get(key)
        return None if names is None else [names.project, names.source]


class Runs(SourceFamilies):
    """Finished runs and failures, and their durations: ``run_totals``."""

    def collect(self) -> Iterator[Metric]:
        cur = self.store.cursor()
        run_totals, row_totals = store_reads.run_totals(cur), store_reads.row_totals(cur)
        runs = CounterMetricFamily(
            "synthbrew_generation_runs",
            "Finished generation runs (status success or failed, or any status with finishedAt),"
            " counted when a run enters this trigger and status."
            + _RETRACTED.format("synthbrew_generation_runs_retracted_total"),
            labels=[*SOURCE_LABELS, "trigger", "status"],
        )
        runs_retracted = CounterMetricFamily(
            "synthbrew_generation_runs_retracted",
            "Finished runs that later left this trigger and status (e.g. a failed run retried"
            " under the same id).",
            labels=[*SOURCE_LABELS, "trigger", "status"],
        )
        failures = CounterMetricFamily(
            "synthbrew_generation_failures",
            "Finished generation runs with status failed."
            + _RETRACTED.format("synthbrew_generation_failures_retracted_total"),
            labels=[*SOURCE_LABELS, "trigger"],
        )
        failures_retracted = CounterMetricFamily(
            "synthbrew_generation_failures_retracted",
            "Failed runs that later stopped being failed (retried, or corrected).",
            labels=[*SOURCE_LABELS, "trigger"],
        )
        failed: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
        for total in run_totals:
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
        for row in row_totals:
            labels = self._labels(row.source)
            if labels is not None:
                failed.setdefault((*labels, row.trigger), [0, 0])
        for key, (count, retracted) in sorted(failed.items()):
            failures.add_metric(list(key), count)
            failures_retracted.add_metric(list(key), retracted)
        yield from (runs, runs_retracted, failures, failures_retracted)
        yield self._durations(run_totals)

    def _durations(self, run_totals: list[store_reads.RunTotal]) -> Metric:
        series = []
        for total in run_totals:
            labels = self._labels(total.source)
            if labels is not None and total.duration_count:
                series.append(([*labels, total.trigger, total.status], total))
        return DurationHistogram(
            "synthbrew_generation_duration_seconds",
            "Duration of finished generation runs (durationMs), in seconds; a run is observed"
            " each time it enters a finished trigger and status with a duration.",
            [*SOURCE_LABELS, "trigger", "status"],
            self.store.rollups.duration_buckets,
            series,
        )


class Rows(SourceFamilies):
    """Billable and inserted rows: ``row_totals``."""

    def collect(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(
                f"synthbrew_generation_{name}", help_text, labels=[*SOURCE_LABELS, "trigger"]
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
        for row in store_reads.row_totals(self.store.cursor()):
            labels = self._labels(row.source)
            if labels is None:
                continue
            series = [*labels, row.trigger]
            families["billable_rows"].add_metric(series, row.billable_rows)
            families["billable_rows_retracted"].add_metric(series, row.billable_rows_retracted)
            families["inserted_rows"].add_metric(series, row.inserted_rows)
            families["inserted_rows_retracted"].add_metric(series, row.inserted_rows_retracted)
        yield from families.values()


class InProgress(SourceFamilies):
    """Runs in flight and stale ones: the live table."""

    def collect(self) -> Iterator[Metric]:
        cur = self.store.cursor()
        counts, stale = store_reads.in_progress(cur), store_reads.stale_runs(cur)
        gauge = GaugeMetricFamily(
            "synthbrew_generation_in_progress",
            "Runs now queued or active (runs flagged stale excluded).",
            labels=[*SOURCE_LABELS, "status"],
        )
        stale_gauge = GaugeMetricFamily(
            "synthbrew_generation_stale_runs",
            "Runs last seen queued or active that left the event window without finishing.",
            labels=list(SOURCE_LABELS),
        )
        for key, names in sorted(self.names.items(), key=lambda kv: (kv[1].project, kv[1].source)):
            labels = [names.project, names.source]
            for status in sorted(IN_FLIGHT_STATUSES):
                gauge.add_metric([*labels, status], counts.get((key, status), 0))
            stale_gauge.add_metric(labels, stale.get(key, 0))
        yield gauge
        yield stale_gauge


class LastFinished(SourceFamilies):
    """The newest finish per status: live runs and ``history_stats``."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "synthbrew_generation_last_finished_timestamp_seconds",
            "finishedAt of the newest finished run per status, as a Unix timestamp in seconds.",
            labels=[*SOURCE_LABELS, "status"],
        )
        for (key, status), when in sorted(
            store_reads.last_finished(self.store.cursor()).items(), key=str
        ):
            labels = self._labels(key)
            if labels is not None:
                family.add_metric([*labels, status], when.timestamp())
        yield family


class SourceInfo(SourceFamilies):
    """Names to ids, from the configuration alone."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "synthbrew_source_info",
            "Maps configured project and source names to their ids. Always 1.",
            labels=[*SOURCE_LABELS, "project_id", "source_id"],
        )
        for (project_id, source_id), names in sorted(
            self.names.items(), key=lambda kv: (kv[1].project, kv[1].source)
        ):
            family.add_metric([names.project, names.source, str(project_id), str(source_id)], 1)
        yield family
