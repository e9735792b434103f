"""The renderer's cache: what it serves is byte for byte what prometheus_client would encode."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from exporter import exposition
from exporter.exposition import Renderer
from exporter.supervision import Faults
from tests.runners import eventually


class Changing(Collector):
    """Families whose values the test changes between renderings."""

    def __init__(self) -> None:
        self.runs = {("shop", "orders"): 3.0, ("shop", "customers"): 5.0, ("web", "clicks"): 1.0}
        self.split = False

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "demo_runs", 'Runs, with "quotes" and a \\ backslash.', labels=["project", "source"]
        )
        for (project, source), value in self.runs.items():
            runs.add_metric([project, source], value)
        yield runs
        durations = HistogramMetricFamily(
            "demo_duration_seconds", "Durations.", labels=["project", "source", "status"]
        )
        for (project, source), value in self.runs.items():
            for status in ("failed", "success"):
                durations.add_metric(
                    [project, source, status],
                    buckets=[("1.0", value), ("+Inf", value * 2)],
                    sum_value=value * 1.5,
                )
        yield durations
        apart = GaugeMetricFamily("demo_apart", "One source listed twice.", labels=["source", "k"])
        for source, k in [("a", "1"), ("b", "1"), ("a", "2")]:
            apart.add_metric([source, k], 2.0 if self.split and k == "2" else 1.0)
        yield apart
        plain = GaugeMetricFamily("demo_up", "No source labels at all.")
        plain.add_metric([], 1.0)
        yield plain


def whole(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    return generate_latest(registry), openmetrics_latest(registry)  # type: ignore[no-untyped-call]


def test_the_rendering_is_exactly_the_library_encoding_across_changes() -> None:
    source = Changing()
    registry = CollectorRegistry()
    registry.register(source)
    renderer = Renderer()
    for change in range(4):
        if change == 1:
            source.runs[("shop", "orders")] = 4.0
        if change == 2:
            source.runs[("new", "one")] = 7.0
            del source.runs[("web", "clicks")]
            source.split = True
        snapshot = renderer.render(registry)
        text, om = whole(registry)
        assert snapshot.text.body == text, change
        assert snapshot.openmetrics.body == om, change
        assert snapshot.text.size == len(text)
    assert b'demo_runs_total{project="new",source="one"} 7.0' in snapshot.text.body
    assert b'source="clicks"' not in snapshot.text.body


def test_only_changed_sources_are_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Changing()
    registry = CollectorRegistry()
    registry.register(source)
    renderer = Renderer()
    renderer.render(registry)
    encoded: list[str] = []
    original = exposition._encode

    def counting(family: Metric) -> tuple[bytes, bytes]:
        encoded.append(family.name)
        return original(family)

    monkeypatch.setattr(exposition, "_encode", counting)
    renderer.render(registry)
    assert encoded == [], "nothing changed, nothing encoded"
    source.runs[("shop", "orders")] = 9.0
    renderer.render(registry)
    assert encoded == ["demo_runs", "demo_duration_seconds"], "one source of two families"


class Flaky(Collector):
    """A collector outside any isolation: its failure fails the whole refresh."""

    def __init__(self) -> None:
        self.broken = False
        self.value = 0.0

    def collect(self) -> Iterator[Metric]:
        if self.broken:
            raise RuntimeError("encoder bug")
        family = GaugeMetricFamily("demo_value", "A value.")
        family.add_metric([], self.value)
        yield family


async def test_a_failed_refresh_is_counted_the_last_rendering_served_and_recovered() -> None:
    registry = CollectorRegistry()
    flaky = Flaky()
    registry.register(flaky)
    version = [0]
    faults = Faults()
    cache = exposition.ExpositionCache(
        registry, lambda: version[0], refresh_seconds=0.02, max_age_seconds=0.05, faults=faults
    )
    cache.refresh()
    good = cache.snapshot
    assert cache.stale() is None
    flaky.broken = True
    version[0] += 1
    task = asyncio.create_task(cache.run())
    try:
        await eventually(lambda: faults.counts["exposition"] >= 3, within=5)
        assert cache.snapshot is good, "the last good rendering is still served"
        await eventually(lambda: cache.stale() is not None, within=5)
        assert "the /metrics rendering is" in (cache.stale() or "")
        assert not task.done(), "the refresh task goes on after failures"
        flaky.broken, flaky.value = False, 5.0
        await eventually(lambda: b"demo_value 5.0" in cache.snapshot.text.body, within=5)
        assert cache.stale() is None
    finally:
        task.cancel()


class Slow(Collector):
    """A collector that takes as long as the test says: a refresh under way."""

    def __init__(self, fail: bool = False) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.finished, self.fail = False, fail

    def collect(self) -> Iterator[Metric]:
        self.entered.set()
        self.release.wait(5)
        self.finished = True
        if self.fail:
            raise RuntimeError("store closed")
        family = GaugeMetricFamily("demo_slow", "A value.")
        family.add_metric([], 1.0)
        yield family


@pytest.mark.parametrize("fail", [False, True])
async def test_stopping_waits_for_the_refresh_under_way(fail: bool) -> None:
    """The store closes once the refresh task has ended: a refresh must not outlive it, and
    its failure is counted like any other."""
    registry = CollectorRegistry()
    slow = Slow(fail)
    registry.register(slow)
    faults = Faults()
    cache = exposition.ExpositionCache(registry, lambda: 0, refresh_seconds=0.01, faults=faults)
    task = asyncio.create_task(cache.run())
    await asyncio.to_thread(slow.entered.wait, 5)
    task.cancel()
    await asyncio.sleep(0.1)
    assert not task.done(), "cancelled while the collector still runs"
    slow.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.finished
    assert faults.counts.get("exposition", 0) == (1 if fail else 0)


def test_the_rendering_says_when_it_was_made() -> None:
    registry = CollectorRegistry()
    cache = exposition.ExpositionCache(registry, lambda: 0, refresh_seconds=1)
    before = time.time()
    cache.refresh()
    body = cache.snapshot.text.body.decode()
    line = next(x for x in body.splitlines() if x.startswith("synthbrew_exporter_last_refresh"))
    assert before <= float(line.split()[1]) <= time.time()
