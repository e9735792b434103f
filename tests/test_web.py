"""The HTTP endpoints over real loopback HTTP, with a status we control."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from exporter.exposition import ExpositionCache
from exporter.httpserver import ThreadedServer
from exporter.web import SourceStatus, build_app


@dataclass
class FakeStatus:
    not_ready: str | None = "waiting for every source's first poll"
    problem: str | None = None
    rows: list[SourceStatus] = field(default_factory=list)

    def readiness(self) -> str | None:
        return self.not_ready

    def store_problem(self) -> str | None:
        return self.problem

    def sources(self) -> list[SourceStatus]:
        return self.rows


@pytest.fixture
def served() -> Iterator[tuple[str, FakeStatus]]:
    registry = CollectorRegistry()
    Counter("demo_things", "Things.", registry=registry).inc(3)
    status = FakeStatus(
        rows=[
            SourceStatus(
                "shop",
                "orders",
                "p1",
                "s1",
                datetime(2026, 1, 1, tzinfo=UTC),
                "success",
                None,
                None,
                42,
                60,
                200,
            ),
            SourceStatus(
                "shop",
                "<script>",
                "p1",
                "s2",
                None,
                "error",
                "timeout",
                "timed out after 5s",
                0,
                30,
                20,
            ),
        ]
    )
    with ThreadedServer(
        build_app(ExpositionCache(registry, lambda: 0, refresh_seconds=1), status)
    ) as server:
        yield server.url, status


def test_metrics_text_format(served: tuple[str, FakeStatus]) -> None:
    url, _ = served
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "demo_things_total 3.0" in r.text


def test_metrics_openmetrics_negotiation(served: tuple[str, FakeStatus]) -> None:
    url, _ = served
    r = httpx.get(
        f"{url}/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_metrics_gzip(served: tuple[str, FakeStatus]) -> None:
    url, _ = served
    with httpx.Client(headers={"accept-encoding": "gzip"}) as client:
        r = client.get(f"{url}/metrics")
    assert r.headers["content-encoding"] == "gzip"
    assert "demo_things_total" in r.text, "httpx decoded the gzip body"
    raw = httpx.get(f"{url}/metrics", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert gzip.compress(raw.content)


def test_health_and_readiness(served: tuple[str, FakeStatus]) -> None:
    url, status = served
    assert httpx.get(f"{url}/healthz").status_code == 200
    waiting = httpx.get(f"{url}/readyz")
    assert waiting.status_code == 503
    assert waiting.json()["detail"] == "waiting for every source's first poll"
    status.not_ready = "the store cannot be written: x.duckdb: database write failed: disk full"
    failing = httpx.get(f"{url}/readyz")
    assert (failing.status_code, failing.json()["detail"]) == (503, status.not_ready)
    status.not_ready = None
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_landing_page_shows_why_the_store_cannot_be_written(
    served: tuple[str, FakeStatus],
) -> None:
    url, status = served
    assert "cannot be written" not in httpx.get(f"{url}/").text
    status.problem = "x.duckdb: database write failed: No space left on device"
    page = httpx.get(f"{url}/").text
    assert "The database cannot be written: x.duckdb: database write failed: No space left" in page


def test_landing_page_lists_sources_escaped(served: tuple[str, FakeStatus]) -> None:
    url, _ = served
    page = httpx.get(f"{url}/").text
    assert '<a href="/metrics">' in page
    assert "orders" in page
    assert "2026-01-01T00:00:00+00:00" in page
    assert "timeout" in page
    assert "timed out after 5s" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "Version 0.1.0" in page


def test_exposition_is_rendered_off_the_request_path() -> None:
    registry = CollectorRegistry()
    counter = Counter("demo_things", "Things.", registry=registry)
    version = [0]
    cache = ExpositionCache(registry, lambda: version[0], refresh_seconds=0.1)
    first = cache.snapshot
    counter.inc()
    assert cache.snapshot is first, "a scrape never renders when a rendering exists"
    version[0] += 1
    cache.refresh()
    assert b"demo_things_total 1.0" in cache.snapshot.text.body
    assert cache.rendered_version() == 1
    assert gzip.decompress(cache.snapshot.openmetrics.gzipped).endswith(b"# EOF\n")
