"""Each metric collector on its own, as node_exporter reports its collectors.

A refresh runs every collector of the group; one that raises (an out-of-memory query, a
database that cannot be read) is left out of that rendering and the others are served. Its
failure is logged with its cause, counted, and shown per collector in
``synthbrew_exporter_scrape_collector_success`` and ``..._duration_seconds``. A collector's
families are gathered in full before any is handed on, so a failure halfway never serves half
a collector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.supervision import Faults

log = logging.getLogger(__name__)


class Isolated(Collector):
    def __init__(self, collectors: Mapping[str, Collector], faults: Faults) -> None:
        self.collectors = dict(collectors)
        self.faults = faults

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: describing would run the collectors' queries at registration."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "synthbrew_exporter_scrape_collector_success",
            "1 if the collector's families were read for the last rendering, 0 if it failed"
            " (its families are then missing from /metrics).",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "synthbrew_exporter_scrape_collector_duration_seconds",
            "Time the collector took in the last rendering, in seconds.",
            labels=["collector"],
        )
        spent = 0.0
        for name, collector in self.collectors.items():
            started = time.perf_counter()
            try:
                families = list(collector.collect())
            except Exception as exc:
                # One cause (the database gone, out of memory) fails most collectors at once:
                # one line for all of them; the success gauge says which.
                self.faults.failed(
                    "collector", exc, f"metric collector {name} failed", alike="collectors"
                )
                families, ok = [], 0
            else:
                ok = 1
            seconds = time.perf_counter() - started
            spent += seconds
            success.add_metric([name], ok)
            duration.add_metric([name], seconds)
            yield from families
        yield success
        yield duration
        scrape = GaugeMetricFamily(
            "synthbrew_exporter_store_scrape_duration_seconds",
            "Time the last refresh spent in the store-backed collectors, in seconds.",
        )
        scrape.add_metric([], spent)
        yield scrape
