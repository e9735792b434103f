"""The exporter's self-metrics: per-source polls, exposed as prometheus_client's instrumented
metrics would expose them, and each API key's requests and pacing."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from exporter.budget import Budgets
from exporter.selfmetrics import POLL_BUCKETS, POLL_ERROR_REASONS, ApiKeys, ExporterStats

SHOP = ("shop", "orders")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_registered_source_has_every_series_at_zero() -> None:
    registry = CollectorRegistry()
    ExporterStats(registry).register_source(*SHOP)
    labels = {"project": "shop", "source": "orders"}
    for outcome in ("success", "error"):
        assert sample(registry, "synthbrew_exporter_polls_total", **labels, outcome=outcome) == 0
    for reason in POLL_ERROR_REASONS:
        assert (
            sample(registry, "synthbrew_exporter_poll_errors_total", **labels, reason=reason) == 0
        )
    assert sample(registry, "synthbrew_exporter_poll_duration_seconds_count", **labels) == 0
    assert sample(registry, "synthbrew_exporter_invalid_events_total", **labels) == 0
    assert sample(registry, "synthbrew_exporter_possible_missed_events_total", **labels) == 0
    assert sample(registry, "synthbrew_exporter_source_up", **labels) == 0


def test_polls_are_counted_by_outcome_and_reason() -> None:
    registry = CollectorRegistry()
    stats = ExporterStats(registry)
    stats.record_poll(SHOP, ok=True, seconds=0.2, invalid=2)
    stats.record_poll(SHOP, ok=False, seconds=1.0, reason="timeout")
    stats.record_poll(SHOP, ok=True, seconds=0.3, possible_gap=True)
    labels = {"project": "shop", "source": "orders"}
    assert sample(registry, "synthbrew_exporter_polls_total", **labels, outcome="success") == 2
    assert sample(registry, "synthbrew_exporter_polls_total", **labels, outcome="error") == 1
    got = sample(registry, "synthbrew_exporter_poll_errors_total", **labels, reason="timeout")
    assert got == 1
    assert (
        sample(registry, "synthbrew_exporter_poll_errors_total", **labels, reason="http_4xx") == 0
    )
    assert sample(registry, "synthbrew_exporter_invalid_events_total", **labels) == 2
    assert sample(registry, "synthbrew_exporter_possible_missed_events_total", **labels) == 1
    assert sample(registry, "synthbrew_exporter_source_up", **labels) == 1


def test_the_duration_histogram_is_what_an_instrumented_histogram_would_expose() -> None:
    """Bucket edges included: a poll of exactly a bound's seconds falls in that bucket."""
    seconds = [0.0, 0.01, 0.011, 0.5, 0.7, 2.5, 59.9, 60.0, 61.0, 600.0]
    registry = CollectorRegistry()
    stats = ExporterStats(registry)
    reference = CollectorRegistry()
    histogram = Histogram(
        "synthbrew_exporter_poll_duration_seconds",
        "Time one poll of one source took, retries included, in seconds.",
        ["project", "source"],
        buckets=POLL_BUCKETS,
        registry=reference,
    )
    for s in seconds:
        stats.record_poll(SHOP, ok=True, seconds=s)
        histogram.labels(*SHOP).observe(s)

    def lines(reg: CollectorRegistry) -> list[str]:
        text = generate_latest(reg).decode()
        return [line for line in text.splitlines() if "poll_duration_seconds_" in line]

    assert lines(registry) == lines(reference)
    assert len(lines(reference)) == len(POLL_BUCKETS) + 3, "every bucket, +Inf, count, sum"


def test_api_keys_are_named_by_project_never_by_key() -> None:
    budgets = Budgets(60, "sb_api_default_secret", [("shop", "sb_api_shop_secret", 30)])
    budgets.for_key("sb_api_shop_secret").answered(200)
    budgets.for_key("sb_api_shop_secret").answered(429, retry_after=30)
    budgets.for_key("sb_api_default_secret").answered(None)
    registry = CollectorRegistry()
    registry.register(ApiKeys(budgets))
    text = generate_latest(registry).decode()
    assert "secret" not in text
    value = registry.get_sample_value
    assert value("synthbrew_exporter_api_requests_total", {"key": "shop", "code": "429"}) == 1
    assert value("synthbrew_exporter_api_requests_total", {"key": "shop", "code": "200"}) == 1
    assert value("synthbrew_exporter_api_requests_total", {"key": "default", "code": "error"}) == 1
    assert value("synthbrew_exporter_api_rate_limit_requests_per_minute", {"key": "default"}) == 60
    hold = value("synthbrew_exporter_api_hold_seconds", {"key": "shop"})
    assert hold is not None
    assert 29 < hold <= 30
    assert value("synthbrew_exporter_api_wait_seconds_total", {"key": "shop"}) == 0
