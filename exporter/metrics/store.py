"""The store's own state: what DuckDB holds in memory and in each table (read from the
database), and what this process wrote and whether it still can (kept in memory: shown even when
the database cannot be read)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.store import Store
from exporter.store import reads as store_reads


class StoreTables(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        cur = self.store.cursor()
        memory = GaugeMetricFamily(
            "synthbrew_exporter_duckdb_memory_bytes",
            "Memory DuckDB holds, by what holds it (duckdb_memory()); the total is capped by"
            " database.memory_limit.",
            labels=["tag"],
        )
        for tag, used in sorted(store_reads.duckdb_memory(cur).items()):
            memory.add_metric([tag.lower()], used)
        yield memory
        sizes = store_reads.table_sizes(cur)
        stored = GaugeMetricFamily(
            "synthbrew_exporter_store_runs",
            "Runs stored, by table: live (can still change, indexed) and history.",
            labels=["table"],
        )
        for table, count in sizes.items():
            stored.add_metric([table], count)
        yield stored


class StoreWrites(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        health = self.store.health
        writable = GaugeMetricFamily(
            "synthbrew_exporter_store_writable",
            "1 if the last write to the database committed (or none was tried yet), 0 while"
            " writes fail.",
        )
        writable.add_metric([], 0 if health.failing_since is not None else 1)
        yield writable
        errors = CounterMetricFamily(
            "synthbrew_exporter_store_write_errors",
            "Writes to the database that failed and were rolled back (batches, poll outcomes,"
            " housekeeping).",
        )
        errors.add_metric([], health.errors)
        yield errors
        reopened = CounterMetricFamily(
            "synthbrew_exporter_store_reopened",
            "Times the database was closed and opened again after DuckDB invalidated it.",
        )
        reopened.add_metric([], health.reopened)
        yield reopened
        stats = self.store.stats
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
