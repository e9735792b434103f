"""Repeated errors are logged once per window, with how many were left out."""

from __future__ import annotations

import logging

import pytest

from exporter.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> tuple[logging.Logger, list[str], Clock]:
    clock = Clock()
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    handler.addFilter(RepeatFilter(window_seconds=60, clock=clock))
    logger = logging.getLogger(f"test.repeat.{id(lines)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, lines, clock


def test_a_flood_of_one_error_is_one_line_a_minute_with_a_count(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    log, lines, clock = logged
    for second in range(600):  # ten minutes of 100 sources failing every second... per second
        clock.now = 1000.0 + second
        for _ in range(100):
            log.error("database write failed: %s", "No space left on device")
    assert len(lines) == 10
    assert lines[0] == "database write failed: No space left on device"
    assert lines[1] == (
        "database write failed: No space left on device ... 5999 more like this in the last 60s"
    )


def test_different_errors_and_lower_levels_are_not_held_back(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    log, lines, _ = logged
    log.error("disk full")
    log.error("out of memory")
    log.info("polled")
    log.info("polled")
    assert lines == ["disk full", "out of memory", "polled", "polled"]


def test_a_repeat_key_groups_messages_that_differ_only_by_source(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    log, lines, clock = logged
    for source in ("shop/orders", "shop/customers", "shop/invoices"):
        log.error("poll %s: disk full", source, extra={"repeat_key": "disk full"})
    clock.now += 61
    log.error("poll %s: disk full", "shop/orders", extra={"repeat_key": "disk full"})
    assert lines == [
        "poll shop/orders: disk full",
        "poll shop/orders: disk full ... 2 more like this in the last 61s",
    ]


def test_messages_that_differ_only_in_numbers_are_alike(
    logged: tuple[logging.Logger, list[str], Clock],
) -> None:
    log, lines, _ = logged
    log.error("Out of Memory Error: block of 256.0 KiB (3.7 MiB/3.8 MiB used)")
    log.error("Out of Memory Error: block of 16.0 KiB (3.5 MiB/3.8 MiB used)")
    assert lines == ["Out of Memory Error: block of 256.0 KiB (3.7 MiB/3.8 MiB used)"]
